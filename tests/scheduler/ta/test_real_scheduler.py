"""Our agents under the REAL ZMailer scheduler (the oracle at /tmp/zm; skipped without).

ZMailer's scheduler gives agents only TZ, PATH and ZCONFIG, runs them in
``$POSTOFFICE/transport`` and reads their reports: the mailbox agent must find MAILBOX
in that zmailer.conf, a ``timeout:`` hold an hour ahead must stay held while one in the
past goes to ``router/``, errormail's bounce goes to ``router/``, and the smtp agent's
``ok3`` (DSN server took NOTIFY=SUCCESS) completes the message without a second notice.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from spool import controlfile
from spool.layout import init_postoffice
from spool.submit import submit
from tests.scheduler.ta import realzm
from tests.scheduler.ta.conftest import MESSAGE, add_after_recipients
from tests.scheduler.ta.scripted_smtp import ScriptedSmtp, Servers

FIXTURES = Path(__file__).parent / "fixtures"

pytestmark = pytest.mark.skipif(not realzm.available(), reason="no ZMailer at /tmp/zm")


@pytest.fixture
def smtp_server() -> Iterator[tuple[ScriptedSmtp, int]]:
    server = ScriptedSmtp("127.0.0.1")
    with Servers(server) as running:
        yield server, running.port


def test_our_agents_under_the_real_scheduler(
    tmp_path: Path, smtp_server: tuple[ScriptedSmtp, int]
) -> None:
    server, port = smtp_server
    po = init_postoffice(tmp_path / "po")
    mail = tmp_path / "mail"
    mail.mkdir()
    (mail / "dave").write_bytes(b"")
    run = realzm.RealScheduler(
        tmp_path, po.root, "", {"MAILBOX": str(mail), "MAILBIN": str(realzm.ZM / "bin")}
    )
    conf = (
        '*/*\tinterval=2s idlemax=20s expiry=5d retries="1 1 1" skew=1\n'
        "\tmaxchannel=0 maxring=20 user=root group=daemon\n"
        f'local/*\tcommand="{run.agent_command("mailbox")}"\n'
        f'smtp/*\tcommand="{run.agent_command("smtp")} -h real.test -F [127.0.0.1] -p {port}"\n'
        f'hold/*\tcommand="{run.agent_command("hold")}"\n'
        f'error/*\tcommand="{run.agent_command("errormail")}"\n'
    )
    run.conf.write_text(conf)
    later = int(time.time()) + 3600
    local = submit(
        po, "alice@example.com", [("local", "dave", "dave")], MESSAGE, hash_levels=2
    )
    held = submit(
        po, "alice@example.com", [("hold", f"timeout:{later}", "u1@example.net")], MESSAGE,
        hash_levels=2,
    )  # fmt: skip
    freed = submit(
        po, "alice@example.com", [("hold", "timeout:1", "u2@example.net")], MESSAGE,
        hash_levels=2,
    )  # fmt: skip
    bounce = submit(
        po, "alice@example.com", [("error", "nosuchuser", "zed@example.com")], MESSAGE,
        hash_levels=2,
    )  # fmt: skip
    out = submit(po, "alice@example.com", [("smtp", "dsn.example", "s@dsn.example")], MESSAGE,
                 hash_levels=2)  # fmt: skip
    add_after_recipients(po, out, {"s@dsn.example": b"N NOTIFY=SUCCESS\n"})
    run.start()
    try:

        def gone(rel: str) -> bool:
            return not po.control_path(rel).exists()

        realzm.wait_for(lambda: gone(local), what=f"local delivery\n{run.log()}")
        realzm.wait_for(lambda: gone(out), what=f"smtp delivery\n{run.log()}")
        realzm.wait_for(lambda: gone(freed), what=f"the past hold\n{run.log()}")
        realzm.wait_for(lambda: gone(bounce), what=f"the bounce\n{run.log()}")
        routed = sorted(p.read_bytes() for p in po.router.iterdir() if p.is_file())
        assert len(routed) == 2
        assert any(
            b"via suspension\n" in r and b"to <u2@example.net>" in r for r in routed
        )
        assert any(b"channel error\nerrormsg\n" in r for r in routed)
        assert server.accepted == [("alice@example.com", ["s@dsn.example"])]
        assert (mail / "dave").read_bytes().startswith(b"From alice@example.com ")
        # the hold an hour ahead: still queued, unmarked, after several runs
        ctl = po.control_path(held)
        realzm.wait_for(
            lambda: run.agent_said(
                "hold", f"u1@example.net stays held (timeout:{later})"
            ),
            what="the hold agent to see the future hold",
        )
        cf = controlfile.parse(ctl.read_bytes(), str(ctl))
        assert [r.status for r in cf.recipients] == [" "]
        # ok3 asks for no success notice: the real scheduler, which crashes writing
        # one (scnotaryreport), is still running
        assert run.proc is not None
        assert run.proc.poll() is None
    finally:
        run.stop()


def _router_ready() -> bool:
    return (realzm.ZM / "router.cf").is_file() and (
        realzm.ZM / "bin" / "router"
    ).is_file()


@pytest.mark.skipif(not _router_ready(), reason="the oracle's router is not set up")
def test_the_real_router_routes_what_we_put_in_router(tmp_path: Path) -> None:
    """Our router/ files (hold's release, errormail's bounce) are ZMailer input: its
    router makes control files of them with the envelope we gave."""
    import string
    import subprocess

    from spool import routersubmit
    from spool.scan import make_hash_dirs

    po = init_postoffice(tmp_path / "po")
    for a in string.ascii_uppercase:
        for b in string.ascii_uppercase:
            make_hash_dirs(po, f"{a}/{b}/")
    for name in ("hold", "errormail"):
        data = (FIXTURES / f"router_input_{name}.txt").read_bytes()
        routersubmit.submit_to_router(po, data)
    conf = tmp_path / "zmailer.conf"
    conf.write_text(
        "".join(
            f"POSTOFFICE={po.root}\n" if line.startswith("POSTOFFICE=") else line + "\n"
            for line in (realzm.ZM / "zmailer.conf").read_text().splitlines()
        )
    )
    for entry in sorted(po.router.iterdir()):
        subprocess.run(
            [str(realzm.ZM / "bin" / "router"), entry.name],
            cwd=po.router,
            env={"ZCONFIG": str(conf), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            timeout=60,
            check=True,
        )
    made = [p.read_bytes() for p in po.transport.rglob("*") if p.is_file()]
    assert len(made) == 2
    relayed = next(m for m in made if b"bob@example.net" in m)
    assert b"\ns local alice@example.com alice@example.com 0\n" in relayed
    assert b"\nr           smtp example.net bob@example.net 65534\n" in relayed
    assert b"\nN ORCPT=rfc822;bob@example.net NOTIFY=FAILURE\n" in relayed
    assert b"via suspension" in relayed
    bounce = next(m for m in made if b"bob@example.net" not in m)
    assert b"\ns error <> <> 0\n" in bounce
    assert b"\nN NOTIFY=NEVER ORCPT=RFC822;alice@example.com\n" in bounce

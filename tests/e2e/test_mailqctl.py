"""``mailqctl`` as a real process against the real daemon: tables, --json, preview and
confirmation (refused without a terminal, done with --yes), several hosts."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.e2e.conftest import ADMIN, ADMIN_PW, DaemonFactory, DaemonProc, wait_until

CONF = """\
*/*\tinterval=1s idlemax=30s expiry=5d retries="60 60"

smtp/*\tqueueonly command="builtin:smtp -h e2e.test"
"""


def ctl(
    d: DaemonProc, *args: str, hosts: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    host_args = [a for h in (hosts or (d.address[0],)) for a in ("-H", h)]
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mailq.client.ctl",
            *host_args,
            "-p",
            str(d.address[1]),
            "-U",
            f"{ADMIN}/{ADMIN_PW}",
            *args,
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=d.env,
        timeout=60,
    )


def _count(d: DaemonProc) -> int:
    (body,) = d.query("SHOW MSGS")
    return len(body.splitlines())


def test_mailqctl_end_to_end(daemon_factory: DaemonFactory) -> None:
    d = daemon_factory(CONF)
    paths = [d.submit(f"u{i}@c{i % 2}.example") for i in range(4)]
    wait_until(lambda: _count(d) == 4, what="loading")

    table = ctl(d, "msgs", "host=c0.example")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["SPOOL_ID", "PATH", "STATE"]
    assert len(lines) == 3

    as_json = ctl(d, "--json", "msgs")
    recs = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert sorted(r["path"] for r in recs) == sorted(paths)
    assert all(r["state"] == "queued" for r in recs)

    # a bulk target without a terminal and without --yes: preview only
    declined = ctl(d, "hold", "--where", "host=c1.example")
    assert declined.returncode == 1
    assert "preview: 2 messages, 2 recipients" in declined.stdout
    assert "use --yes" in declined.stderr
    (held,) = d.query("SHOW MSGS WHERE state=held")
    assert held == ""

    done = ctl(
        d, "--json", "--yes", "hold", "--where", "host=c1.example", "--reason", "x"
    )
    assert done.returncode == 0, done.stderr
    preview, acted = (json.loads(line) for line in done.stdout.splitlines())
    assert preview["token"]
    assert acted["ok"] is True
    assert "held 2 messages (2 recipients)" in acted["reply"]
    op = acted["op"]

    one = ctl(d, "--json", "msg", paths[1])
    rec = json.loads(one.stdout)
    assert rec["state"] == "held"
    assert rec["recipients"][0]["address"] == "u1@c1.example"

    ops = ctl(d, "--json", "ops")
    assert op in [json.loads(line)["op"] for line in ops.stdout.splitlines()]

    undo = ctl(d, "undo", op)
    assert undo.returncode == 0, undo.stderr
    assert undo.stdout.startswith("+OK op=")

    bad = ctl(d, "msgs", "ag<2x")
    assert bad.returncode == 1
    assert "bad filter term 1" in bad.stderr

    # two hosts (the same server twice): each answer is labelled
    two = ctl(d, "--json", "suspends", hosts=("127.0.0.1", "localhost"))
    assert two.returncode in (0, 69)  # localhost may resolve to ::1 only elsewhere
    sus = ctl(d, "--json", "suspend", "smtp/*.example", "--for", "1h", "incident")
    assert json.loads(sus.stdout)["ok"] is True
    listed = ctl(d, "suspends")
    assert "smtp/*.example" in listed.stdout
    shape = ctl(d, "shape", "--by", "domain")
    assert "TOTAL" in shape.stdout

"""The hold conditions as ZMailer's hold knows them, and submission through router/."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler.ta.holdconditions import Environment, check
from spool.layout import Postoffice
from spool.submit import submit
from tests.scheduler.ta.conftest import MESSAGE, add_after_recipients, run_ta, statuses
from tests.scheduler.ta.dnsserver import DnsServer, ThreadedDnsServer


def _hold(po: Postoffice, *conditions: str) -> str:
    rcpts = [("hold", c, f"u{i}@example.net") for i, c in enumerate(conditions)]
    return submit(po, "alice@example.com", rcpts, MESSAGE)


def _zenv(tmp_path: Path, **extra: str) -> dict[str, str]:
    conf = tmp_path / "zmailer.conf"
    conf.write_text("".join(f"{k}={v}\n" for k, v in extra.items()))
    return {"ZCONFIG": str(conf)}


def test_timeout_an_hour_ahead_stays_held(po: Postoffice, tmp_path: Path) -> None:
    later, past = int(time.time()) + 3600, int(time.time()) - 10
    rel = _hold(po, f"timeout:{later}", f"TIMEOUT:{past}")
    jobs = [f"{rel}\ttimeout:{later}", f"{rel}\tTIMEOUT:{past}"]
    res = run_ta("hold", po, jobs, "--submit", "transport", env=_zenv(tmp_path))
    assert [r[2] for r in res.reports] == ["deferred", "ok3"], res.stderr
    assert res.reports[0][3].startswith("retryat +")
    assert statuses(po, rel) == {"u0@example.net": " ", "u1@example.net": "+"}


def test_age_script_home_and_bad_conditions(po: Postoffice, tmp_path: Path) -> None:
    mailbin = tmp_path / "mailbin"
    (mailbin / "bin").mkdir(parents=True)
    (mailbin / "bin" / "yes").write_text('test "$1" = u1 && exit 0; exit 3\n')
    (mailbin / "bin" / "no").write_text('echo "not yet for $1"; exit 1\n')
    conds = [
        "age:1h",
        "script:yes/u1",
        "script:no/u2",
        "home:nobody",
        "home:no-such-user-here",
        "frobnicate:x",
        "plainhost",
    ]
    rel = _hold(po, *conds)
    jobs = [f"{rel}\t{c}" for c in conds]
    res = run_ta(
        "hold",
        po,
        jobs,
        "--submit",
        "transport",
        env=_zenv(tmp_path, MAILBIN=str(mailbin)),
    )
    got = {r[1].split("\001")[0]: (r[2], r[3]) for r in res.reports}
    assert got["u0@example.net"][0] == "deferred"  # the message is seconds old
    assert got["u1@example.net"][0] == "ok3"
    assert got["u2@example.net"] == ("deferred", "not yet for u2 [exit status 1]")
    assert got["u3@example.net"][0] == "deferred"  # nobody's home does not exist
    assert got["u4@example.net"][0] == "ok3"  # no such user: delivery decides
    assert got["u5@example.net"][0] == "deferred"  # unsupported: stays held
    assert got["u6@example.net"][0].startswith("error")  # no ':' at all


def test_io_releases_one_time_in_ten() -> None:
    env = Environment(now=0, arrival=0, chance=lambda: 0.05)
    assert check("io:", env).release
    env.chance = lambda: 0.5
    assert not check("io:", env).release


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsServer]:
    server = DnsServer(
        zone={("up.example", "MX"): [(10, "mx.up.example")]}, silent={"down.example"}
    )
    with ThreadedDnsServer(server) as running:
        yield running


def test_ns_released_once_the_nameserver_answers(
    po: Postoffice, dns: DnsServer, tmp_path: Path
) -> None:
    conds = ["ns:up.example/mx", "ns:down.example/mx", "ns:nohost.example/a"]
    rel = _hold(po, *conds)
    res = run_ta(
        "hold",
        po,
        [f"{rel}\t{c}" for c in conds],
        "--submit",
        "transport",
        "--resolver",
        dns.address,
        # the silent server is given up after 1 s, not resolv.conf's 2 x 5 s
        env=_zenv(tmp_path) | {"RES_OPTIONS": "timeout:1 attempts:1"},
        timeout=60,
    )
    assert [r[2] for r in res.reports] == ["ok3", "deferred", "ok3"], res.stderr


def test_release_goes_through_router_with_the_envelope(
    po: Postoffice, tmp_path: Path
) -> None:
    notify = po.root / ".router.notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.settimeout(10)
    rel = _hold(po, "timeout:1")
    add_after_recipients(
        po,
        rel,
        {"u0@example.net": b"N NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;u0+40example.net\n"},
    )
    before = set(os.listdir(po.transport))
    res = run_ta(
        "hold",
        po,
        [f"{rel}\ttimeout:1"],
        "--submit",
        "router",
        env=_zenv(tmp_path, ROUTERNOTIFY=str(notify)),
    )
    [rep] = res.reports
    assert rep[2] == "ok2", res.stderr  # NOTIFY=SUCCESS: a relayed notice
    assert rep[1].split("\001")[1] == "relayed"
    [name] = os.listdir(po.router)
    data = (po.router / name).read_bytes()
    assert data == (
        b"via suspension\nfrom <alice@example.com>\n"
        b"todsn ORCPT=rfc822;u0+40example.net NOTIFY=FAILURE,SUCCESS\n"
        b"to <u0@example.net>\nenv-end\n" + MESSAGE
    )
    assert name == str((po.router / name).stat().st_ino)
    assert sock.recv(100) == f"NEW router {name}".encode()
    sock.close()
    assert set(os.listdir(po.transport)) == before
    assert os.listdir(po.public) == []


def test_errormail_bounce_goes_through_router(po: Postoffice, tmp_path: Path) -> None:
    rel = submit(
        po, "alice@example.com", [("error", "nosuchuser", "zed@example.com")], MESSAGE
    )
    res = run_ta(
        "errormail",
        po,
        [f"{rel}\tnosuchuser"],
        "--hostname",
        "mx.test",
        "--submit",
        "router",
        env=_zenv(tmp_path),
    )
    assert [r[2] for r in res.reports] == ["ok3"], res.stderr
    [name] = os.listdir(po.router)
    data = (po.router / name).read_bytes()
    head, _, message = data.partition(b"env-end\n")
    assert head == (
        b"channel error\nerrormsg\n"
        b"todsn NOTIFY=NEVER ORCPT=RFC822;alice@example.com\nto <alice@example.com>\n"
    )
    assert b"Content-Type: multipart/report" in message
    assert b"zed@example.com" in message


def test_auto_mode_picks_router_only_where_zmailers_router_is(tmp_path: Path) -> None:
    from spool.routersubmit import choose

    mailbin = tmp_path / "bin"
    mailbin.mkdir()
    assert choose("auto", {"MAILBIN": str(mailbin)}) == "transport"
    (mailbin / "router").write_text("#!/bin/sh\n")
    (mailbin / "router").chmod(0o755)
    assert choose("auto", {"MAILBIN": str(mailbin)}) == "router"
    assert choose("transport", {"MAILBIN": str(mailbin)}) == "transport"

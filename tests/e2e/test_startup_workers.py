"""A big spool at start: the daemon forks its load workers, loads every file through
them, and still answers its signals (the workers took none of its handlers)."""

from __future__ import annotations

import signal
from pathlib import Path

from scheduler.daemon.loadworker import MIN_FILES
from spool.ids import hash_prefix
from spool.layout import Postoffice
from tests.e2e.conftest import DaemonFactory, wait_until

QUEUE_ONLY = (
    '*/*\tinterval=1m expiry=5d maxchannel=0\nsmtp/*\tqueueonly command="bitbucket"\n'
)


def router_files(po: Postoffice, n: int) -> None:
    """``n`` control and message files as a router writes them, hashed two levels."""
    for number in range(100_000, 100_000 + n):
        prefix = hash_prefix(number, 2)
        for top in (po.transport, po.queue):
            (top / prefix).mkdir(parents=True, exist_ok=True)
        host = f"h{number % 50}.example"
        (po.transport / f"{prefix}{number}").write_text(
            f"@ 0x00000007\ni {number}\no 20\nl <{number}@e2e>\ne s@example.com\n"
            f"s local - s@example.com 0\nr           smtp {host} u{number}@{host} 0\n"
            "m\nSubject: e2e\n\n"
        )
        (po.queue / f"{prefix}{number}").write_text("Subject: e2e\n\nbody\n")


def test_a_big_spool_loads_through_forked_workers(
    daemon_factory: DaemonFactory,
) -> None:
    d = daemon_factory(QUEUE_ONLY, args=("-HH",), start=False)
    router_files(d.po, MIN_FILES)
    d.start()
    stored = f"Msgs in {MIN_FILES} out 0 stored {MIN_FILES}"
    wait_until(lambda: stored in d.query("SHOW SNMP")[0], what="all loaded")
    assert "startup load in 2 worker process(es), forked" in d.log()
    assert "exited with" not in d.log()  # no worker failed
    (threads,) = d.query("SHOW QUEUE THREADS")
    assert threads.count("    smtp/h") == 50  # a thread per host
    assert "Thrds:  50  Rcpnts: 2000" in threads
    d.send(signal.SIGHUP)  # the daemon's own handlers still work
    wait_until(lambda: "configuration reloaded" in d.log(), what="reload")
    assert d.stop() == 0
    assert "scheduler stopped" in d.log()
    assert not list(Path(d.po.root / "freezer").glob("*.reason"))

"""The runner: the real core, real spool files and real testta subprocesses, in-process."""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from scheduler.config.clauses import load_config
from scheduler.core.scheduler import Scheduler
from scheduler.daemon.notify import NotifySocket
from scheduler.daemon.runner import Runner
from spool.counters import Counters
from spool.dsnpass import run_dsn_pass
from spool.layout import Postoffice, init_postoffice
from spool.submit import submit

CONF = """\
*/*\tinterval=1s idlemax=30s expiry=5d retries="1 1 1 1"
\tmaxchannel=0 maxring=20 overfeed=10

local/*\tqueueonly command="mailbox"
smtp/*\tcommand="builtin:testta -c $channel"
broken/*\tcommand="{broken}"
"""

MESSAGE = b"Subject: test\n\nbody\n"


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    # AF_UNIX socket paths must stay short; pytest's tmp_path may not be.
    with tempfile.TemporaryDirectory(prefix="rnr") as d:
        yield Path(d)


class Env:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.po = init_postoffice(root / "po")
        broken = root / "broken-ta"
        broken.write_text("#!/bin/sh\necho 'this is garbage'\nexit 3\n")
        broken.chmod(0o755)
        conf = root / "scheduler.conf"
        conf.write_text(CONF.format(broken=broken))
        self.config = load_config(str(conf), {})
        self.counters = Counters.open(None)
        self.core = Scheduler(self.config, self.counters, start_time=int(time.time()))
        self.runner = Runner(
            self.core,
            self.po,
            hash_levels=1,
            counters=self.counters,
            dsn_pass=run_dsn_pass,
            hostname="test.invalid",
            scan_interval=0.2,
            deep_scan_interval=0.5,
        )

    def submit(self, *rcpts: str) -> str:
        return submit(self.po, "sender@example.com", list(rcpts), MESSAGE, notify=False)


@pytest_asyncio.fixture
async def env(short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Env]:
    monkeypatch.setenv(
        "TESTTA_RULES", "*@ok.example=ok;*@fail.example=error;*=deferred"
    )
    monkeypatch.setenv("TESTTA_LOG", str(short_tmp / "ta.log"))
    e = Env(short_tmp)
    task = asyncio.create_task(e.runner.run())
    try:
        yield e
    finally:
        e.runner.stop()
        await task
        await e.runner.shutdown(2.0)
        e.counters.close()


async def until(cond: Callable[[], object], limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def files_gone(po: Postoffice, relpath: str) -> bool:
    name = relpath.rpartition("/")[2]
    ctl = list(po.transport.rglob(name))
    msg = list(po.queue.rglob(name))
    return not ctl and not msg


@pytest.mark.asyncio
async def test_delivered_message_is_removed(env: Env) -> None:
    relpath = env.submit("smtp ok.example a@ok.example", "smtp ok.example b@ok.example")
    await until(lambda: files_gone(env.po, relpath))
    assert env.core.msgs == 0
    assert env.core.counters.get("SC.TransmittedMessages") == 1
    assert env.core.counters.get("SC.TransmittedRecipients") == 2
    assert "ok.example" in (env.root / "ta.log").read_text()


@pytest.mark.asyncio
async def test_deferral_sets_diagnostic_and_wakeup(env: Env) -> None:
    relpath = env.submit("smtp later.example c@later.example")
    name = relpath.rpartition("/")[2]
    await until(
        lambda: (th := env.core.find_thread("smtp", "later.example")) and th.attempts
    )
    th = env.core.find_thread("smtp", "later.example")
    assert th is not None
    (vertex,) = list(th.vertices())
    assert vertex.attempts >= 1
    assert vertex.message
    assert th.wakeup > env.core.start_time
    ctl = next(env.po.transport.rglob(name))
    assert ctl.read_bytes().count(b"\nr ") == 1  # still pending on disk


@pytest.mark.asyncio
async def test_notification_loads_new_file_at_once(env: Env) -> None:
    ns = NotifySocket(env.po.notify_socket, env.runner.notify)
    ns.open()
    try:
        env.runner._next_scan = time.time() + 3600  # no rescans: only NEW finds it
        env.runner._next_deep = time.time() + 3600
        relpath = submit(
            env.po,
            "s@example.com",
            ["smtp ok.example x@ok.example"],
            MESSAGE,
            hash_levels=2,
        )
        await until(lambda: files_gone(env.po, relpath), limit=60)
    finally:
        ns.close()


@pytest.mark.asyncio
async def test_corrupt_file_is_quarantined_and_the_rest_flows(env: Env) -> None:
    (env.po.transport / "999001").write_bytes(b"\x00\x01 not a control file\n")
    relpath = env.submit("smtp ok.example a@ok.example")
    await until(lambda: files_gone(env.po, relpath))
    await until(lambda: (env.po.freezer / "999001").exists())
    assert not (env.po.transport / "999001").exists()


@pytest.mark.asyncio
async def test_failing_agent_never_stalls_the_daemon(env: Env) -> None:
    bad = env.submit("broken somewhere z@somewhere")
    good = env.submit("smtp ok.example a@ok.example")
    await until(lambda: files_gone(env.po, good))
    await until(lambda: env.core.counters.get("SC.TransportAgentForks") >= 2)
    assert not files_gone(env.po, bad)
    th = env.core.find_thread("broken", "somewhere")
    assert th is not None
    assert th.rcpts == 1


@pytest.mark.asyncio
async def test_killed_agent_loses_nothing(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TESTTA_SLEEP", "1.5")
    relpath = env.submit("smtp ok.example a@ok.example")
    await until(lambda: env.runner.agents.pids())
    (pid,) = env.runner.agents.pids().values()
    await until(lambda: (env.root / "ta.log").exists())  # the job was taken
    os.kill(pid, signal.SIGKILL)
    await until(lambda: files_gone(env.po, relpath), limit=60)
    assert env.core.counters.get("SC.TransportAgentForks") >= 2
    assert env.core.counters.get("SC.TransmittedRecipients") == 1


@pytest.mark.asyncio
async def test_etrn_file_is_consumed(env: Env) -> None:
    (env.po.transport / "888001-etrn").write_text("T Later.Example 127.0.0.1\n")
    await until(lambda: not (env.po.transport / "888001-etrn").exists())
    assert not (env.po.freezer / "888001-etrn").exists()


@pytest.mark.asyncio
async def test_queue_operations(env: Env) -> None:
    relpath = env.submit("smtp later.example c@later.example")
    await until(lambda: env.core.msgs == 1)
    assert env.runner.etrn("nothing.example") == 0
    name = relpath.rpartition("/")[2]
    assert not env.runner.kill_msg("424242")
    assert env.runner.kill_msg(name)
    await until(lambda: files_gone(env.po, relpath))
    assert env.core.msgs == 0

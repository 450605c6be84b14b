"""The startup load leaves the event loop turns for MAILQ v2 sessions between passes."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import pytest

from scheduler.config.clauses import load_config
from scheduler.core.scheduler import Scheduler
from scheduler.daemon.runner import Runner
from spool.counters import Counters
from spool.layout import init_postoffice
from spool.submit import submit

CONF = (
    '*/*\tinterval=1m expiry=5d retries="1 1"\nlocal/*\tqueueonly command="mailbox"\n'
)


@pytest.mark.asyncio
async def test_bulk_load_passes_leave_several_loop_turns(tmp_path: Path) -> None:
    """A query needs about eight loop turns (accept, greeting, AUTH, reply): each bulk
    load pass is followed by several turns, not one, so it is answered within a few
    short passes while a big spool loads."""
    po = init_postoffice(tmp_path / "po")
    for n in range(40):
        rcpt = ("local", "-", f"u{n}")
        submit(po, "s@example.com", [rcpt], b"Subject: t\n\nb\n", notify=False)
    conf = tmp_path / "scheduler.conf"
    conf.write_text(CONF)
    counters = Counters.open(None)
    core = Scheduler(load_config(str(conf), {}), counters, start_time=int(time.time()))
    runner = Runner(core, po, counters=counters, bulk_budget=0.0, load_workers=0)
    order: list[str] = []
    load = runner._load

    def recording(now: float, limit: int, budget: float) -> None:
        order.append("pass")
        load(now, limit, budget)

    runner._load = recording  # type: ignore[method-assign]
    done = False

    async def probe() -> None:
        while not done:
            order.append("turn")
            await asyncio.sleep(0)

    probing = asyncio.ensure_future(probe())
    task = asyncio.ensure_future(runner.run())
    deadline = time.monotonic() + 30
    while runner.loaded_total < 40 and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    runner.stop()
    await task
    done = True
    await probing
    await runner.shutdown(1.0)
    counters.close()
    assert runner.loaded_total == 40
    passes = [i for i, what in enumerate(order) if what == "pass"]
    assert len(passes) >= 10  # one file per pass (budget 0)
    gaps = [b - a - 1 for a, b in itertools.pairwise(passes)]
    assert min(gaps) >= 4

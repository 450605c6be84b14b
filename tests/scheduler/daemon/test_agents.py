"""AgentPool: real TA subprocesses over pipes (scheduler/daemon/agents.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import pytest

from scheduler.daemon.agents import MAX_LINE, AgentPool, AgentSpec
from scheduler.lifeline import Lifeline

# A tiny TA: "#hungry" at start; each job line is answered "<job> done" + "#hungry";
# an empty line or EOF ends it.
ECHO_TA = """
import sys
print("#hungry", flush=True)
print("to stderr", file=sys.stderr, flush=True)
for line in sys.stdin:
    line = line.rstrip("\\n")
    if not line:
        break
    print(line + " done", flush=True)
    print("#hungry", flush=True)
sys.exit(0)
"""

STUBBORN_TA = """
import signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("#hungry", flush=True)
sys.stdin.read()
while True:
    time.sleep(1)
"""


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, int, object]] = []
        self.done: dict[int, asyncio.Event] = {}
        self.lines: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
        self.reads: list[tuple[int, list[str]]] = []  # one entry per agent_lines call

    def _ev(self, proc: int) -> asyncio.Event:
        return self.done.setdefault(proc, asyncio.Event())

    def agent_started(self, proc: int, pid: int) -> None:
        self.events.append(("started", proc, pid))

    def agent_start_failed(self, proc: int, reason: str) -> None:
        self.events.append(("failed", proc, reason))
        self._ev(proc).set()

    def agent_lines(self, proc: int, lines: list[str]) -> None:
        self.reads.append((proc, list(lines)))
        for line in lines:
            self.events.append(("line", proc, line))
            self.lines.put_nowait((proc, line))

    def agent_exited(self, proc: int, returncode: int) -> None:
        self.events.append(("exited", proc, returncode))
        self._ev(proc).set()

    async def wait(self, proc: int) -> None:
        await asyncio.wait_for(self._ev(proc).wait(), 20)

    async def line(self) -> tuple[int, str]:
        return await asyncio.wait_for(self.lines.get(), 20)

    def kinds(self, proc: int) -> list[str]:
        return [k for k, p, _ in self.events if p == proc]

    def exit_code(self, proc: int) -> object:
        return next(v for k, p, v in self.events if p == proc and k == "exited")


def script(tmp_path: Path, name: str, body: str) -> tuple[str, ...]:
    path = tmp_path / f"{name}.py"
    path.write_text(body)
    return (sys.executable, str(path))


@pytest.mark.asyncio
async def test_job_round_trip_then_retire(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder()
    pool = AgentPool(rec, cwd=tmp_path)
    caplog.set_level(logging.INFO, logger="scheduler.daemon.agents")
    pool.start(
        AgentSpec(proc=1, argv=script(tmp_path, "echo", ECHO_TA), channel="smtp")
    )
    assert await rec.line() == (1, "#hungry")
    pool.write(1, b"A/B/1001\texample.net\n")
    pool.write(1, b"1002\texample.org\n")
    assert await rec.line() == (1, "A/B/1001\texample.net done")
    assert await rec.line() == (1, "#hungry")
    assert await rec.line() == (1, "1002\texample.org done")
    assert await rec.line() == (1, "#hungry")
    pool.retire(1)
    await rec.wait(1)
    assert rec.kinds(1)[0] == "started"
    assert rec.kinds(1)[-1] == "exited"
    assert rec.exit_code(1) == 0
    assert len(pool) == 0
    assert any("to stderr" in r.getMessage() for r in caplog.records)
    pool.write(1, b"late\n")  # writing to a gone agent is harmless


@pytest.mark.asyncio
async def test_garbage_and_overlong_lines_are_delivered_as_lines(
    tmp_path: Path,
) -> None:
    body = (
        "import sys\n"
        "sys.stdout.buffer.write(b'\\xff\\xfe garbage\\n' + b'x' * 200000 + b'\\nlast')\n"
    )
    rec = Recorder()
    pool = AgentPool(rec)
    pool.start(AgentSpec(proc=7, argv=script(tmp_path, "garbage", body)))
    await rec.wait(7)
    lines = [v for k, p, v in rec.events if k == "line"]
    assert lines[0] == "\udcff\udcfe garbage"
    assert lines[1] == "x" * MAX_LINE
    assert lines[2] == "last"
    assert len(lines) == 3
    assert rec.exit_code(7) == 0


@pytest.mark.asyncio
async def test_lines_of_one_write_come_in_one_call(tmp_path: Path) -> None:
    """A TA that answers a batch of jobs with one write costs one listener call (and
    one core event), not one per line; a character cut between two writes (and so
    between two reads) is decoded whole, and a line cut between them comes once."""
    body = (
        "import os, sys, time\n"
        "os.write(1, b'1/10\\t\\tok\\n#hungry\\n2/20\\t\\tok\\n#hungry\\n3/3')\n"
        "time.sleep(0.2)\n"
        "os.write(1, b'0\\t\\tok caf\\xc3')\n"
        "time.sleep(0.2)\n"
        "os.write(1, b'\\xa9\\n#hungry\\n')\n"
    )
    rec = Recorder()
    pool = AgentPool(rec)
    pool.start(AgentSpec(proc=4, argv=script(tmp_path, "batch", body)))
    await rec.wait(4)
    lines = [v for k, p, v in rec.events if k == "line"]
    assert lines == [
        "1/10\t\tok",
        "#hungry",
        "2/20\t\tok",
        "#hungry",
        "3/30\t\tok caf\u00e9",
        "#hungry",
    ]
    assert rec.reads[0] == (4, lines[:4])  # the first write, whole
    assert [r[1] for r in rec.reads[1:]] == [lines[4:]]
    assert rec.exit_code(4) == 0


@pytest.mark.asyncio
async def test_agent_that_dies_at_once(tmp_path: Path) -> None:
    rec = Recorder()
    pool = AgentPool(rec)
    pool.start(AgentSpec(proc=2, argv=script(tmp_path, "die", "raise SystemExit(75)")))
    await rec.wait(2)
    assert rec.kinds(2) == ["started", "exited"]
    assert rec.exit_code(2) == 75


@pytest.mark.asyncio
async def test_exec_failure_is_reported(tmp_path: Path) -> None:
    rec = Recorder()
    pool = AgentPool(rec)
    pool.start(AgentSpec(proc=3, argv=(str(tmp_path / "no-such-agent"),)))
    await rec.wait(3)
    assert rec.kinds(3) == ["failed"]
    assert len(pool) == 0


@pytest.mark.asyncio
async def test_stubborn_agent_is_killed_after_timeout(tmp_path: Path) -> None:
    rec = Recorder()
    pool = AgentPool(rec, term_grace=0.3)
    pool.start(AgentSpec(proc=4, argv=script(tmp_path, "stubborn", STUBBORN_TA)))
    assert await rec.line() == (4, "#hungry")
    pool.retire(4, kill_after=0.3)
    await rec.wait(4)
    assert rec.exit_code(4) == -9


@pytest.mark.asyncio
async def test_shutdown_reaps_everything(tmp_path: Path) -> None:
    rec = Recorder()
    pool = AgentPool(rec, term_grace=0.3)
    pool.start(AgentSpec(proc=5, argv=script(tmp_path, "echo", ECHO_TA)))
    pool.start(AgentSpec(proc=6, argv=script(tmp_path, "stubborn", STUBBORN_TA)))
    await rec.line()
    await rec.line()
    await pool.shutdown(0.3)
    assert rec.exit_code(5) == 0
    assert rec.exit_code(6) == -9
    assert len(pool) == 0


@pytest.mark.asyncio
async def test_environment_and_cwd(tmp_path: Path) -> None:
    body = "import os\nprint(os.environ['TAVAR'], os.getcwd())\n"
    rec = Recorder()
    pool = AgentPool(rec, cwd=tmp_path)
    pool.start(
        AgentSpec(proc=8, argv=script(tmp_path, "env", body), env={"TAVAR": "v1"})
    )
    assert await rec.line() == (8, f"v1 {tmp_path}")
    await rec.wait(8)


PDEATHSIG_TA = """\
import ctypes, sys
sig = ctypes.c_int()
ctypes.CDLL(None).prctl(2, ctypes.byref(sig), 0, 0, 0)  # PR_GET_PDEATHSIG
print(sig.value, flush=True)
sys.stdin.read()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")
@pytest.mark.parametrize(
    ("helper", "nice", "expected"),
    [
        (False, 0, signal.SIGTERM),  # no helper: a preexec_fn (fork)
        (True, 0, 0),  # handed to the helper: no preexec_fn (vfork)
        (True, 5, signal.SIGTERM),  # a nice value needs the preexec_fn
    ],
)
@pytest.mark.asyncio
async def test_how_an_agent_is_tied_to_the_daemon(
    tmp_path: Path, helper: bool, nice: int, expected: int
) -> None:
    life = Lifeline.start() if helper else None
    assert (life is not None) == helper
    rec = Recorder()
    pool = AgentPool(rec, lifeline=life)
    argv = script(tmp_path, "pdeathsig", PDEATHSIG_TA)
    pool.start(AgentSpec(proc=9, argv=argv, nice=nice))
    assert await rec.line() == (9, str(int(expected)))
    await pool.shutdown(1.0)
    assert rec.exit_code(9) == 0
    if life is not None:  # the pool ends the helper once its agents are reaped
        assert not life.alive
        reaped = not await asyncio.to_thread(os.path.exists, f"/proc/{life.pid}")
        assert reaped  # ended, and not left a zombie

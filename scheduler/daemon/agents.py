"""Transport-agent (TA) processes: the asyncio shell around MQ2-REF 13.

One :class:`AgentPool` owns every TA subprocess of the daemon. A TA is started with
pipes on stdin and stdout (stderr lines go to our log, one log record per line), its
stdout is split into lines and handed to an :class:`AgentListener`, and writes go
through a per-agent queue drained by a writer task, so a TA that stops reading slows
only itself. Retiring writes an empty line and closes stdin; a ``kill_after`` timeout
escalates to SIGTERM and then SIGKILL. The pool never interprets a line: the decision
core does (events ``AgentStarted``/``AgentLine``/``AgentExited``, built by the runner).

Silence time-out (``silence_timeout`` > 0, ``PARAMagent-timeout``/``--agent-timeout``):
a TA that owes an answer (a job or ``#idle`` written to it and not yet answered by its
``#hungry``) and has written nothing at all for that many seconds (a message file that is a FIFO, a remote
end that never answers), is killed with its process group. Its exit is then an
ordinary ``AgentExited``: the core hands its unreported jobs back to their threads and
starts a new TA when one is needed; the stale recipient locks of the dead PID are
reset at the next load of the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Final, Protocol

from scheduler.core.commands import StartAgent
from scheduler.lifeline import Lifeline, dies_with_parent

__all__ = [
    "MAX_LINE",
    "AgentListener",
    "AgentPool",
    "AgentSpec",
]

logger = logging.getLogger(__name__)

MAX_LINE: Final = 64 * 1024
"""A TA line longer than this is cut here (the rest up to the LF is dropped)."""

_READ_CHUNK: Final = 64 * 1024
_TERM_GRACE: Final = 5.0


class AgentListener(Protocol):
    """Where the pool reports what its processes do (called from the event loop)."""

    def agent_started(self, proc: int, pid: int) -> None: ...
    def agent_start_failed(self, proc: int, reason: str) -> None: ...
    def agent_lines(self, proc: int, lines: list[str]) -> None:
        """The complete lines of one read, in order (without their LFs)."""

    def agent_exited(self, proc: int, returncode: int) -> None: ...


AgentSpec = StartAgent
"""How to run one TA: the core's :class:`~scheduler.core.commands.StartAgent` command itself."""


class _Agent:
    """One TA process and its reader/writer tasks."""

    def __init__(self, spec: AgentSpec) -> None:
        self.spec = spec
        self.process: asyncio.subprocess.Process | None = None
        self.outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.retiring = False
        self.exited = False
        self.tasks: set[asyncio.Task[None]] = set()
        self.runner: asyncio.Task[None] | None = None
        self.owed = 0  # lines written (jobs, #idle) not yet answered by "#hungry"
        self.heard = 0.0  # loop time of the last write to it or byte from it
        self.timed_out = False
        self.pending = b""  # stdout after its last LF
        self.overlong = False  # the rest of a line cut at MAX_LINE is being dropped

    @property
    def pid(self) -> int:
        return self.process.pid if self.process else 0


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    """The TA's stdout goes straight to the pool as it is read (no StreamReader and
    no reader-task turn in between); stdin and stderr as in ``create_subprocess_exec``.
    What arrives before the pool listens (``on_data`` set) is kept for it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=_READ_CHUNK, loop=loop)
        self.on_data: Callable[[bytes], None] | None = None
        self.early: list[bytes] = []
        self.stdout_closed: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        if fd != 1:
            super().pipe_data_received(fd, data)
            return
        raw = data if isinstance(data, bytes) else data.encode()  # (always bytes)
        if self.on_data is None:
            self.early.append(raw)
        else:
            self.on_data(raw)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1 and not self.stdout_closed.done():
            self.stdout_closed.set_result(None)
        super().pipe_connection_lost(fd, exc)

    def listen(self, on_data: Callable[[bytes], None]) -> None:
        early, self.early = self.early, []
        self.on_data = on_data
        for data in early:
            on_data(data)


class AgentPool:
    """Every TA subprocess of one daemon.

    ``start`` returns at once; the listener hears ``agent_started`` (or
    ``agent_start_failed``), then ``agent_lines`` per read of stdout, then exactly one
    ``agent_exited`` after EOF on stdout and the process reaped.
    """

    def __init__(
        self,
        listener: AgentListener,
        *,
        cwd: str | os.PathLike[str] | None = None,
        base_env: Mapping[str, str] | None = None,
        term_grace: float = _TERM_GRACE,
        silence_timeout: float = 0.0,
        lifeline: Lifeline | None = None,
    ) -> None:
        self._listener = listener
        self._lifeline = lifeline
        self._watching = False
        self.silence_timeout = silence_timeout  # 0: none
        self._cwd = cwd
        self._base_env = None if base_env is None else dict(base_env)
        self._term_grace = term_grace
        self._agents: dict[int, _Agent] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._agents)

    def pids(self) -> dict[int, int]:
        """``proc -> pid`` of every running TA."""
        return {p: a.pid for p, a in self._agents.items() if a.process}

    def start(self, spec: AgentSpec) -> None:
        if self._lifeline is not None and not self._watching:
            self._watch_lifeline(self._lifeline)
        agent = _Agent(spec)
        self._agents[spec.proc] = agent
        agent.runner = self._spawn(agent, self._run(agent))

    def write(self, proc: int, data: bytes) -> None:
        """Queue ``data`` for the TA's stdin; dropped if the TA is gone or retiring."""
        agent = self._agents.get(proc)
        if agent is None or agent.retiring:
            logger.debug("write to gone agent %d dropped (%d bytes)", proc, len(data))
            return
        if not agent.owed:
            agent.heard = asyncio.get_running_loop().time()
        agent.owed += data.count(b"\n")
        stdin = agent.process.stdin if agent.process is not None else None
        if stdin is not None and agent.outbox.empty() and not stdin.is_closing():
            stdin.write(data)  # at once: the TA has its jobs before the next loop turn
        else:  # not started yet, or the writer task has data queued before this
            agent.outbox.put_nowait(data)

    def retire(self, proc: int, kill_after: float = 0.0) -> None:
        """Write ``\\n``, close stdin; with ``kill_after`` > 0, TERM then KILL later."""
        agent = self._agents.get(proc)
        if agent is None:
            return
        if not agent.retiring:
            agent.retiring = True
            agent.outbox.put_nowait(b"\n")
            agent.outbox.put_nowait(None)
        if kill_after > 0:
            self._spawn(agent, self._escalate(agent, kill_after))

    async def shutdown(self, grace: float) -> None:
        """Retire every TA, wait ``grace`` s, then SIGTERM, then SIGKILL; reap all."""
        for proc in list(self._agents):
            self.retire(proc, kill_after=grace)
        running = [a.runner for a in self._agents.values() if a.runner is not None]
        if running:
            await asyncio.wait(running, timeout=grace + 2 * self._term_grace)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        if self._lifeline is not None:  # every TA reaped: it has nothing left to do
            if self._watching:
                asyncio.get_running_loop().remove_reader(self._lifeline.fileno())
                self._watching = False
            self._lifeline.close()

    # -- internals ------------------------------------------------------------

    def _watch_lifeline(self, lifeline: Lifeline) -> None:
        asyncio.get_running_loop().add_reader(
            lifeline.fileno(), self._lifeline_gone, lifeline
        )
        self._watching = True

    def _lifeline_gone(self, old: Lifeline) -> None:
        """The helper has gone (killed): another one takes over the running agents."""
        asyncio.get_running_loop().remove_reader(old.fileno())
        self._watching = False
        old.close()
        new = Lifeline.start()
        self._lifeline = new
        pids = [
            a.process.pid
            for a in self._agents.values()
            if a.process is not None and a.process.returncode is None
        ]
        if new is None:
            logger.error(
                "the lifeline helper (pid %d) has gone and no other could start: "
                "new TAs get PR_SET_PDEATHSIG, %d running TA(s) only their stdin's EOF",
                old.pid,
                len(pids),
            )
            return
        adopted = sum(new.adopt(pid) for pid in pids)
        logger.warning(
            "the lifeline helper (pid %d) has gone: pid %d took over %d running TA(s)",
            old.pid,
            new.pid,
            adopted,
        )
        self._watch_lifeline(new)

    def _spawn(
        self, agent: _Agent, coro: Coroutine[Any, Any, None]
    ) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        agent.tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(agent.tasks.discard)
        return task

    async def _run(self, agent: _Agent) -> None:
        spec = agent.spec
        try:
            process, protocol = await self._create(spec)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            self._agents.pop(spec.proc, None)
            reason = f"{type(exc).__name__}: {exc}"
            logger.error("Exec of %s failed! (%s)", " ".join(spec.argv[:1]), reason)
            self._listener.agent_start_failed(spec.proc, reason)
            return
        agent.process = process
        logger.debug(
            "started TA proc=%d pid=%d %s/%s: %s",
            spec.proc,
            process.pid,
            spec.channel,
            spec.host,
            " ".join(spec.argv),
        )
        self._listener.agent_started(spec.proc, process.pid)
        writer = asyncio.ensure_future(self._writer(agent))
        stderr = asyncio.ensure_future(self._stderr(agent))
        watchdog = asyncio.ensure_future(self._watchdog(agent))
        try:
            protocol.listen(lambda data: self._stdout(agent, data))
            await protocol.stdout_closed
            self._stdout_eof(agent)
            returncode = await process.wait()
        finally:
            for task in (writer, watchdog):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            with contextlib.suppress(asyncio.CancelledError):
                await stderr
            _close_stdin(process)
        self._agents.pop(spec.proc, None)
        agent.exited = True
        if returncode != 0:
            what = f"SIGNAL={-returncode}" if returncode < 0 else f"EXIT={returncode}"
            logger.warning(
                "reclaim() pid=%d, reaped=1, chan=%s, host=%s %s",
                process.pid,
                spec.channel,
                spec.host,
                what,
            )
        self._listener.agent_exited(spec.proc, returncode)

    async def _create(
        self, spec: AgentSpec
    ) -> tuple[asyncio.subprocess.Process, _Protocol]:
        argv = spec.argv
        if not argv:
            raise ValueError("empty command")
        base = os.environ if self._base_env is None else self._base_env
        env = {**base, **spec.env}
        kwargs: dict[str, object] = {}
        if os.geteuid() == 0:
            if spec.gid is not None:
                kwargs["group"] = spec.gid
                kwargs["extra_groups"] = []
            if spec.uid is not None:
                kwargs["user"] = spec.uid
        # agents end with the scheduler, however it ends (scheduler.lifeline): handed
        # to the lifeline helper, so that subprocess can use vfork (a preexec_fn
        # makes it fork the whole daemon), or else by a preexec_fn
        held = self._lifeline
        if held is not None and (kwargs or spec.nice or not held.alive):
            held = None  # a fork anyway (user, group), a nice value, or no helper
        if held is None:
            kwargs["preexec_fn"] = dies_with_parent(
                then=_nicer(spec.nice) if spec.nice else None
            )
        loop = asyncio.get_running_loop()
        # asyncio.create_subprocess_exec, with stdout read by _Protocol
        transport, protocol = await loop.subprocess_exec(
            lambda: _Protocol(loop),
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=self._cwd,
            env=env,
            start_new_session=True,
            **kwargs,  # type: ignore[arg-type]
        )
        if held is not None and not held.adopt(transport.get_pid()):
            logger.warning(
                "TA pid %d could not be handed to the lifeline helper: it ends with "
                "the scheduler only by its stdin's EOF",
                transport.get_pid(),
            )
        return asyncio.subprocess.Process(transport, protocol, loop), protocol

    def _stdout(self, agent: _Agent, chunk: bytes) -> None:
        """Split stdout into lines as it is read; every complete line of one read goes
        to the listener in one ``agent_lines`` call (a TA answers a batch of jobs at
        once)."""
        if not chunk:
            return
        agent.heard = asyncio.get_running_loop().time()
        pending = agent.pending + chunk
        end = pending.rfind(b"\n")
        if end < 0:
            done = b""
        else:
            done, pending = pending[:end], pending[end + 1 :]
        proc = agent.spec.proc
        if done and not agent.overlong and len(done) <= MAX_LINE:
            # the usual read: whole lines, none overlong: decoded and split at once
            text = _decode(done)
            if agent.owed:  # one job (or #idle) answered per "#hungry..." line
                hungry = ("\n" + text).count("\n#hungry")
                agent.owed = max(0, agent.owed - hungry)
            self._listener.agent_lines(proc, text.split("\n"))
        elif done:
            agent.overlong = self._slow_lines(agent, done.split(b"\n"), agent.overlong)
        if len(pending) > MAX_LINE:
            if not agent.overlong:
                logger.warning("TA pid %d: line over %d bytes cut", agent.pid, MAX_LINE)
                self._listener.agent_lines(proc, [_decode(pending[:MAX_LINE])])
            agent.overlong = True
            pending = b""
        agent.pending = pending

    def _stdout_eof(self, agent: _Agent) -> None:
        pending, agent.pending = agent.pending, b""
        if pending and not agent.overlong:
            self._listener.agent_lines(agent.spec.proc, [_decode(pending)])

    def _slow_lines(self, agent: _Agent, raws: list[bytes], overlong: bool) -> bool:
        """Lines one by one: a read that ends an overlong line or holds one."""
        lines: list[str] = []
        for raw in raws:
            if raw.startswith(b"#hungry") and agent.owed:
                agent.owed -= 1  # one job (or #idle) answered
            if overlong:
                overlong = False
                continue
            lines.append(_decode(raw[:MAX_LINE]))
        if lines:
            self._listener.agent_lines(agent.spec.proc, lines)
        return overlong

    async def _writer(self, agent: _Agent) -> None:
        assert agent.process is not None
        assert agent.process.stdin is not None
        stdin = agent.process.stdin
        try:
            while True:
                data = await agent.outbox.get()
                if data is None:
                    break
                # Coalesce what is already queued into one write.
                parts = [data]
                while not agent.outbox.empty():
                    nxt = agent.outbox.get_nowait()
                    if nxt is None:
                        agent.outbox.put_nowait(None)
                        break
                    parts.append(nxt)
                stdin.write(b"".join(parts))
                await stdin.drain()
        except (ConnectionError, OSError):
            logger.debug("TA pid %d: stdin closed", agent.pid)
        finally:
            _close_stdin(agent.process)

    async def _stderr(self, agent: _Agent) -> None:
        assert agent.process is not None
        assert agent.process.stderr is not None
        stream = agent.process.stderr
        tag = f"TA {agent.spec.channel or agent.spec.argv[0]}[{agent.pid}]"
        while True:
            try:
                line = await stream.readline()
            except (ValueError, asyncio.LimitOverrunError):
                await stream.read(_READ_CHUNK)
                continue
            except OSError:
                return
            if not line:
                return
            logger.info("%s: %s", tag, _decode(line.rstrip(b"\n")))

    async def _watchdog(self, agent: _Agent) -> None:
        """Kill the TA when it owes an answer and has been silent too long."""
        loop = asyncio.get_running_loop()
        while True:
            limit = self.silence_timeout
            if limit <= 0 or agent.retiring:
                await asyncio.sleep(1.0)  # the setting may change on a reload
                continue
            left = agent.heard + limit - loop.time()
            if not agent.owed or left > 0:
                await asyncio.sleep(
                    max(0.05, min(left, limit) if agent.owed else limit)
                )
                continue
            agent.timed_out = True
            logger.error(
                "TA pid %d (%s/%s) silent for %gs on a job: killed; "
                "its job goes back to the thread and a new TA takes over",
                agent.pid,
                agent.spec.channel,
                agent.spec.host,
                limit,
            )
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(agent.pid, signal.SIGKILL)
            return

    async def _escalate(self, agent: _Agent, kill_after: float) -> None:
        for sig, wait in (
            (signal.SIGTERM, kill_after),
            (signal.SIGKILL, self._term_grace),
        ):
            await asyncio.sleep(wait)
            if agent.exited or agent.process is None:
                return
            if agent.process.returncode is not None:
                return
            logger.warning(
                "TA pid %d (%s/%s) did not exit: sending %s",
                agent.pid,
                agent.spec.channel,
                agent.spec.host,
                sig.name,
            )
            with contextlib.suppress(ProcessLookupError):
                agent.process.send_signal(sig)


def _nicer(increment: int) -> Callable[[], None]:
    def apply() -> None:
        os.nice(increment)

    return apply


def _close_stdin(process: asyncio.subprocess.Process) -> None:
    if process.stdin is not None and not process.stdin.is_closing():
        process.stdin.close()


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")

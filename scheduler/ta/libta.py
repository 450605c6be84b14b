"""The shared transport-agent runtime: ZMailer's TA protocol over stdin/stdout.

Every agent (``python -m scheduler.ta.NAME``) runs :func:`run_agent` with an object that
implements :class:`Deliverer`. The runtime owns the protocol (MQ2-REF §13):

* print ``#hungry`` and read a job line ``<spoolpath>\\t<host>`` (``<spoolpath>`` for
  withhost agents, whose host is in argv); an empty line or EOF ends the agent; ``#idle``
  is answered with ``#hungry``;
* read the control file, pick the recipients with status `` `` on this channel and host,
  lock each (``~`` + PID) just before delivery, mark it (``+``/``-``/`` ``) right after,
  append the ``d`` line (fsynced) before reporting when the TA logs the diagnostic itself
  (``ok2``/``error2``), and report one line per recipient;
* ``#resync <spoolpath>`` when nothing in the job could be locked.

Agents only decide outcomes; the runtime does every spool write. Logging goes to stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from spool import controlfile, store
from spool.controlfile import ControlFile, Recipient
from spool.errors import SpoolError
from spool.ids import message_number
from spool.layout import Postoffice

__all__ = [
    "AgentOptions",
    "Deliverer",
    "Job",
    "OneByOne",
    "Outcome",
    "TaRuntime",
    "common_parser",
    "deferred",
    "delivered",
    "failed",
    "format_report",
    "ignore_flags",
    "ignore_options_with_argument",
    "make_notary",
    "options_from",
    "parse_args",
    "parse_job_line",
    "resolve_postoffice",
    "run_agent",
    "setup_logging",
]

log = logging.getLogger(__name__)

FLUSH_AFTER = 0.05
"""Seconds of work after which the answers ready so far are written out."""
_CHUNK = 64 * 1024

# Statuses after which the recipient line is marked, and with what.
_MARKS = {
    "ok": "+",
    "ok2": "+",
    "ok3": "+",
    "error": "-",
    "error2": "-",
    "deferred": " ",
    "deferall": " ",
    "deferback": " ",
    "retryat": " ",
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one recipient, as an agent decides it.

    ``status`` is a TA status keyword (``ok``, ``error``, ``deferred``, ``deferall``,
    ``retryat``, ``ok3``); the runtime turns ``ok``/``error`` into ``ok2``/``error2`` when it
    writes the ``d`` line itself. ``message`` is the text after the keyword (for ``retryat``
    it starts with ``[+]N``); empty means "the diagnostic text".
    """

    status: str
    dsn_status: str
    diagnostic: str
    message: str = ""
    remote_mta: str = ""
    action: str = ""

    @property
    def notary_action(self) -> str:
        if self.action:
            return self.action
        if self.status.startswith("ok"):
            return "delivered"
        if self.status.startswith("error"):
            return "failed"
        return "delayed"

    @property
    def text(self) -> str:
        return self.message or self.diagnostic


def delivered(
    diagnostic: str, remote_mta: str = "", dsn_status: str = "2.0.0"
) -> Outcome:
    """A successful delivery (``ok``)."""
    return Outcome("ok", dsn_status, diagnostic, remote_mta=remote_mta)


def failed(diagnostic: str, remote_mta: str = "", dsn_status: str = "5.0.0") -> Outcome:
    """A permanent failure (``error``)."""
    return Outcome("error", dsn_status, diagnostic, remote_mta=remote_mta)


def deferred(
    diagnostic: str, remote_mta: str = "", dsn_status: str = "4.0.0"
) -> Outcome:
    """A temporary failure (``deferred``)."""
    return Outcome("deferred", dsn_status, diagnostic, remote_mta=remote_mta)


@dataclass(frozen=True, slots=True)
class Job:
    """One job line: a control file (relative to ``transport/``) and the host to serve."""

    spoolpath: str
    host: str | None


@dataclass(slots=True)
class AgentOptions:
    """Options shared by every agent."""

    name: str
    channel: str
    postoffice: Postoffice
    host: str | None = None  # withhost agents: the host from argv
    nomark: bool = False  # do not touch the control file (benchmarks)


@dataclass(slots=True)
class JobContext:
    """What an agent sees of a job: the parsed control file and where its files are."""

    job: Job
    relpath: str
    control_path: str | os.PathLike[str]  # str from the runtime (no pathlib per job)
    message_path: str | os.PathLike[str]
    control: ControlFile
    options: AgentOptions
    extra: dict[str, object] = field(default_factory=dict)

    def message_body(self) -> bytes:
        """The body of the message file from offset ``o`` (the headers are in ``m``)."""
        with store.open_message(self.message_path) as f:  # no link, no FIFO
            f.seek(self.control.body_offset or 0)
            return f.read()


class Deliverer(Protocol):
    """An agent's delivery logic. ``batch`` agents get all recipients of a job at once."""

    batch: bool

    def begin_job(self, job: Job) -> None:
        """Called for every job line before its control file is read."""
        ...

    def deliver(
        self, ctx: JobContext, recipients: Sequence[Recipient]
    ) -> list[Outcome]:
        """Return one outcome per recipient, in order."""
        ...


class OneByOne:
    """Base of a :class:`Deliverer` that handles each recipient on its own (locked,
    delivered and reported one at a time): subclasses write :meth:`deliver_one`."""

    batch = False

    def begin_job(self, job: Job) -> None:
        return None

    def deliver(
        self, ctx: JobContext, recipients: Sequence[Recipient]
    ) -> list[Outcome]:
        return [self.deliver_one(ctx, r) for r in recipients]

    def deliver_one(self, ctx: JobContext, rcpt: Recipient) -> Outcome:
        raise NotImplementedError


def make_notary(rcpt: Recipient, outcome: Outcome, taname: str) -> str:
    """``final-recipient \\1 action \\1 status \\1 diagnostic \\1 remote-MTA \\1 taname``."""
    fields = (
        rcpt.user,
        outcome.notary_action,
        outcome.dsn_status,
        outcome.diagnostic,
        outcome.remote_mta,
        taname,
    )
    return "\001".join(_one_line(f) for f in fields)


def _one_line(text: str) -> str:
    return text.replace("\n", "\r")


def format_report(
    number: int, offset: int, notary: str, status: str, message: str
) -> bytes:
    """``<id>/<offset>\\t<notary>\\t<status>[ <message>]\\n`` (MQ2-REF §13.3)."""
    tail = f" {_one_line(message)}" if message else ""
    line = f"{number}/{offset}\t{_one_line(notary)}\t{status}{tail}\n"
    return line.encode("utf-8", "surrogateescape")


def parse_job_line(line: bytes, default_host: str | None) -> Job | None:
    """Parse a job line; ``None`` for the empty line (exit). ``#idle`` is not a job."""
    text = line.rstrip(b"\r\n").decode("utf-8", "surrogateescape")
    if not text:
        return None
    path, sep, host = text.partition("\t")
    return Job(path.strip(), host.strip() if sep else default_host)


def resolve_postoffice(option: str | None) -> Postoffice:
    """``-P``, else the cwd when it is ``…/transport``, else ``$POSTOFFICE``, else cwd/..."""
    if option:
        return Postoffice(Path(option))
    cwd = Path.cwd()
    if cwd.name == "transport":
        return Postoffice(cwd.parent)
    env = os.environ.get("POSTOFFICE")
    if env:
        return Postoffice(Path(env))
    return Postoffice(cwd.parent)


def setup_logging(name: str) -> None:
    """Agents log to stderr only (stderr is the scheduler's log)."""
    level = os.environ.get("TA_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, level, logging.INFO),
        format=f"{name}[{os.getpid()}]: %(levelname)s %(message)s",
    )


class TaRuntime:
    """The protocol loop of one agent process (I/O over the given binary streams)."""

    def __init__(
        self,
        options: AgentOptions,
        deliverer: Deliverer,
        stdin: BinaryIO,
        stdout: BinaryIO,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.options = options
        self.deliverer = deliverer
        self.stdin = stdin
        self.stdout = stdout
        self.clock = clock
        self.pid = os.getpid()
        self.taname = f"{options.name}[{self.pid}]"
        self._dirs: tuple[str, str] | None = None  # transport/, queue/ as str

    def run(self) -> int:
        """Serve jobs until the empty line or EOF; return the exit status.

        Input is read in big chunks and split into lines; the answers to every job of
        a chunk go out in one write (a job that takes longer than :data:`FLUSH_AFTER`
        flushes what is ready, so a slow delivery does not hold earlier reports back).
        """
        read1 = getattr(self.stdin, "read1", None)
        pending = b""
        try:
            self._say(b"#hungry\n")
            while True:
                chunk = read1(_CHUNK) if read1 is not None else self.stdin.readline()
                if not chunk:
                    if pending:  # a last line without its LF
                        self._say(self._answer(pending) or b"")
                    self._idle()
                    return 0
                *lines, pending = (pending + chunk).split(b"\n")
                if not self._serve(lines):
                    return 0
        except BrokenPipeError:
            log.info("scheduler closed the pipe")
            return 0

    def _serve(self, lines: list[bytes]) -> bool:
        """Answer complete input lines; False when one of them ends the agent."""
        out: list[bytes] = []
        since = time.monotonic()
        try:
            for line in lines:
                answer = self._answer(line)
                if answer is None:
                    return False
                out.append(answer)
                if time.monotonic() - since > FLUSH_AFTER:
                    self._say(b"".join(out))
                    out.clear()
                    since = time.monotonic()
        finally:
            self._say(b"".join(out))
        return True

    def _answer(self, line: bytes) -> bytes | None:
        """The reply to one input line (``#hungry`` after each job); None: exit."""
        if line.rstrip(b"\r") == b"#idle":
            self._idle()
            return b"#hungry\n"
        job = parse_job_line(line, self.options.host)
        if job is None:
            self._idle()
            return None
        return self.process(job) + b"#hungry\n"

    def _idle(self) -> None:
        """Tell a deliverer that keeps connections open (``idle()``) to close them."""
        idle = getattr(self.deliverer, "idle", None)
        if idle is not None:
            try:
                idle()
            except Exception:  # closing politely must never kill the agent
                log.exception("idle hook failed")

    def _say(self, data: bytes) -> None:
        if data:
            self.stdout.write(data)
            self.stdout.flush()

    def process(self, job: Job) -> bytes:
        """Run one job and return the report lines to send."""
        opts = self.options
        if self._dirs is None:
            po = opts.postoffice
            self._dirs = (os.fspath(po.transport) + "/", os.fspath(po.queue) + "/")
        transport, queue = self._dirs
        spoolpath = job.spoolpath
        path = transport + spoolpath
        self.deliverer.begin_job(job)
        try:
            data = store.read_control(path)
            cf = controlfile.parse(data, path)
        except (OSError, SpoolError) as exc:
            log.warning("cannot use job %s: %s", spoolpath, exc)
            return f"#resync {spoolpath}\n".encode("utf-8", "surrogateescape")
        prefix, sep, name = spoolpath.rpartition("/")
        mid = cf.mid if cf.mid is not None else name
        ctx = JobContext(job, spoolpath, path, queue + prefix + sep + mid, cf, opts)
        wanted = list(self._select(cf, job.host))
        out: list[bytes] = []
        handled = 0
        if self.deliverer.batch:
            locked = self._lock(ctx, wanted)
            handled = len(locked)
            if locked:
                out.extend(self._deliver(ctx, locked))
        else:
            for rcpt in wanted:
                locked = self._lock(ctx, [rcpt])
                if locked:
                    handled += 1
                    out.extend(self._deliver(ctx, locked))
        if not handled:
            log.info("nothing lockable in %s for host %s", job.spoolpath, job.host)
            return f"#resync {job.spoolpath}\n".encode("utf-8", "surrogateescape")
        return b"".join(out)

    def _select(self, cf: ControlFile, host: str | None) -> Iterable[Recipient]:
        channel = self.options.channel.lower()
        want_host = host.lower() if host is not None else None
        for rcpt in cf.recipients:
            if rcpt.status != " ":
                continue
            if channel != "*" and rcpt.channel.lower() != channel:
                continue
            if want_host is None or rcpt.host.lower() == want_host:
                yield rcpt

    def _lock(self, ctx: JobContext, rcpts: Sequence[Recipient]) -> list[Recipient]:
        if self.options.nomark:
            return list(rcpts)
        return [
            r
            for r in rcpts
            if store.lock_recipient(ctx.control_path, r.offset, self.pid)
        ]

    def _deliver(self, ctx: JobContext, rcpts: list[Recipient]) -> list[bytes]:
        try:
            outcomes = self.deliverer.deliver(ctx, rcpts)
        except Exception as exc:  # a bug in an agent must not leave locks behind
            log.exception("delivery crashed for %s", ctx.relpath)
            outcomes = [
                deferred(f"x-local; 500 (agent failure: {type(exc).__name__})")
            ] * len(rcpts)
        if len(outcomes) != len(rcpts):
            raise AssertionError("deliverer returned a wrong number of outcomes")
        return [self._finish(ctx, r, o) for r, o in zip(rcpts, outcomes, strict=True)]

    def _finish(self, ctx: JobContext, rcpt: Recipient, outcome: Outcome) -> bytes:
        """Mark the recipient, write its ``d`` line if we own it, return its report line."""
        notary = make_notary(rcpt, outcome, self.taname)
        status = outcome.status
        number = message_number(ctx.relpath.rpartition("/")[2])
        if self.options.nomark:
            return format_report(number, rcpt.offset, notary, status, outcome.text)
        mark = _MARKS.get(status, " ")
        own_d = (status == "ok" and "SUCCESS" in rcpt.notify) or (
            status == "error" and "FAILURE" in rcpt.notify
        )
        if own_d:  # the d line goes first: a crash before the mark repeats, never loses
            line = controlfile.format_diagnostic(
                rcpt.offset,
                rcpt.header_offset,
                rcpt.dsn_offset,
                int(self.clock()),
                _one_line(notary),
                _one_line(outcome.text),
            )
            try:
                store.append_diagnostic(ctx.control_path, line, fsync=True)
            except OSError as exc:  # ENOSPC/EIO: unlock and let the scheduler retry
                log.error("%s: cannot write the d line: %s", ctx.relpath, exc)
                store.mark_recipient(ctx.control_path, rcpt.offset, " ")
                later = deferred(f"x-local; 400 (cannot record the report: {exc})")
                notary = make_notary(rcpt, later, self.taname)
                return format_report(
                    number, rcpt.offset, notary, "deferred", later.text
                )
            status += "2"
        store.mark_recipient(ctx.control_path, rcpt.offset, mark)
        return format_report(number, rcpt.offset, notary, status, outcome.text)


def common_parser(
    name: str, description: str, default_channel: str | None = None
) -> argparse.ArgumentParser:
    """The options every agent accepts (``-h`` is left free: smtp uses it for HELO).

    The channel defaults to the agent's name; ``*`` serves every channel.
    """
    channel = default_channel or name
    p = argparse.ArgumentParser(prog=name, description=description, add_help=False)
    p.add_argument("--help", action="help", help="show this help and exit")
    p.add_argument(
        "-c", "--channel", default=channel, help=f"channel served (default {channel})"
    )
    p.add_argument("-P", "--postoffice", default=None, help="postoffice root")
    p.add_argument(
        "-V", "--version", action="version", version=f"{name} (zmailer-mailq)"
    )
    p.add_argument(
        "host", nargs="?", default=None, help="host served (withhost agents)"
    )
    return p


def ignore_options_with_argument(p: argparse.ArgumentParser, letters: str) -> None:
    """Accept ZMailer's flags that take an argument and that we do not implement
    (``-l logfile`` …), so the argument is not mistaken for the positional host."""
    for letter in letters:
        p.add_argument(f"-{letter}", dest=f"ignored_{letter}", help=argparse.SUPPRESS)


def ignore_flags(p: argparse.ArgumentParser, letters: str) -> None:
    """Accept ZMailer's argument-less flags that we do not implement; digits (``-8``)
    must be declared, or argparse takes them for a negative number, i.e. the host."""
    for letter in letters:
        p.add_argument(
            f"-{letter}",
            dest=f"flag_{letter}",
            action="store_true",
            help=argparse.SUPPRESS,
        )


def options_from(args: argparse.Namespace, name: str) -> AgentOptions:
    """Build :class:`AgentOptions` from :func:`common_parser` results."""
    return AgentOptions(
        name=name,
        channel=str(args.channel).lower(),
        postoffice=resolve_postoffice(args.postoffice),
        host=args.host,
    )


def parse_args(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> argparse.Namespace:
    """Parse, tolerating unknown ZMailer flags (``-8``, ``-s`` …) with a log line."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        log.info("ignoring unsupported arguments: %s", " ".join(unknown))
    return args


def run_agent(options: AgentOptions, deliverer: Deliverer) -> int:
    """Run the protocol loop on the process's stdin/stdout."""
    runtime = TaRuntime(options, deliverer, sys.stdin.buffer, sys.stdout.buffer)
    return runtime.run()

"""The scheduler daemon: wires ZENV, scheduler.conf, counters, the pid file, the runner,
the notify socket and the MAILQ v2 listeners together, and handles signals.

Startup (SCHED-REF 3.2): read the configuration (fatal on error), open the counter block
(``SYS.SchedulerMaster*`` set, gauges zeroed), take the pid file (a live scheduler is
refused unless ``replace``), open the notify socket and the listeners, write the ready
file, then run. SIGHUP/SIGUSR1 re-read scheduler.conf (on error the old one stays and
every problem is logged: S46 fix). SIGTERM/SIGINT stop gracefully: listeners closed,
every TA told to exit (empty line, EOF), then SIGTERM, then SIGKILL after
``shutdown_grace``; the pid file is always removed (S41 fix).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import os
import signal
import socket
import stat
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mailq.protocol.errors import ListenError
from mailq.server.listeners import ListenSpec, parse_listen_spec
from mailq.server.shell import MailqServer, ServerConfig
from scheduler.config.clauses import SchedulerConfig, default_config, load_config
from scheduler.core.scheduler import Scheduler
from scheduler.daemon import pidfile
from scheduler.daemon.deliveries import DeliveryTap
from scheduler.daemon.monitor import Monitor
from scheduler.daemon.notify import NotifySocket, notify_address
from scheduler.daemon.opcontrol import ControlPlaneImpl
from scheduler.daemon.runner import Runner
from scheduler.daemon.sdnotify import EX_CONFIG, Notifier
from scheduler.daemon.startcheck import (
    EX_UNAVAILABLE,
    config_problems,
    listener_problems,
    socket_owner,
)
from scheduler.errors import ConfigError
from scheduler.lifeline import Lifeline
from spool.bindaddr import bind_address
from spool.counters import Counters
from spool.dsnpass import dsn_pass_for
from spool.errors import SpoolError
from spool.layout import Postoffice

if TYPE_CHECKING:
    from mailq.server.httpshell import MonitorServer

__all__ = [
    "COUNTER_FILE",
    "DaemonOptions",
    "bind_specs",
    "counter_path",
    "inherited_sockets",
    "run_daemon",
]

logger = logging.getLogger(__name__)

DEFAULT_LISTEN = "TCP:mailq"  # the 'mailq' tcp service, else 174 (MQ2-REF 2)
COUNTER_FILE = ".mailq-spool.counters"
"""The counter block when ZENV names no ``SNMPSHAREDFILE`` (ZMailer's format either way;
where ZENV names one, that file is shared with ZMailer's own programs)."""
SPACE_CHECK_TICKS = 25  # seconds between file-system gauge refreshes


@dataclass(frozen=True)
class DaemonOptions:
    postoffice: Path
    zenv: Mapping[str, str]
    config_path: str | None = None
    authfile: str | None = None
    listen: tuple[str, ...] = ()
    hash_levels: int = 0
    pid_file: Path | None = None
    replace: bool = False
    freeze: bool = False
    ready_file: Path | None = None
    max_sessions: int = 20
    session_lifetime: float = 90.0
    shutdown_grace: float = 10.0
    sockets: Sequence[socket.socket] = field(default_factory=tuple)
    counters: str | None = None  # --counters: a path, or "none"; None: the default
    metrics_listen: str | None = None  # --metrics-listen HOST:PORT (docs/monitoring.md)
    unix_owner: str | None = None  # Unix listeners (else PARAMmailqsock-owner ...)
    unix_group: str | None = None
    unix_mode: int | None = None
    agent_timeout: float | None = None  # else PARAMagent-timeout, else none


def counter_path(
    option: str | None, zenv: Mapping[str, str], postoffice: Path
) -> str | None:
    """Where the counter block lives: ``--counters PATH`` (``none``: in memory, None
    returned), else ZENV ``SNMPSHAREDFILE``, else ``$POSTOFFICE/.mailq-spool.counters``.
    """
    if option:
        return None if option.lower() == "none" else option
    return zenv.get("SNMPSHAREDFILE") or str(postoffice / COUNTER_FILE)


def inherited_sockets(environ: dict[str, str] | None = None) -> list[socket.socket]:
    """systemd socket activation (sd_listen_fds): fds 3.. when LISTEN_PID is us.

    The ``LISTEN_*`` variables are removed so that TAs do not inherit them.
    """
    env = os.environ if environ is None else environ
    pid, count = env.get("LISTEN_PID", ""), env.get("LISTEN_FDS", "")
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(name, None)
    if not (pid.isdigit() and count.isdigit()) or int(pid) != os.getpid():
        return []
    socks = []
    for fd in range(3, 3 + int(count)):
        sock = socket.socket(fileno=fd)
        sock.set_inheritable(False)
        socks.append(sock)
    return socks


def read_config(path: str | None, zenv: Mapping[str, str]) -> SchedulerConfig:
    """The configuration, or ConfigError (also for one without any clause)."""
    config = default_config(zenv) if path is None else load_config(path, zenv)
    problems = config_problems(config)
    if problems:
        raise ConfigError(problems)
    for warning in config.warnings:
        logger.warning("%s", warning)
    return config


class Daemon:
    """One running scheduler; :meth:`run` returns the exit status."""

    def __init__(
        self,
        opts: DaemonOptions,
        config: SchedulerConfig,
        lifeline: Lifeline | None = None,
    ) -> None:
        self.opts = opts
        self.lifeline = lifeline
        self.config = config
        self.po = Postoffice(opts.postoffice)
        self.pid_path = opts.pid_file or self.po.pid_file
        self._stop = asyncio.Event()
        self._server: MailqServer | None = None
        self._notify: NotifySocket | None = None
        self._monitor: MonitorServer | None = None
        self.systemd = Notifier()

    async def run(self) -> int:
        counters = open_counters(
            counter_path(self.opts.counters, self.opts.zenv, self.opts.postoffice)
        )
        try:
            pidfile.acquire(self.pid_path, replace=self.opts.replace)
        except pidfile.PidFileError as exc:
            logger.error("%s", exc)
            counters.close()
            return EX_UNAVAILABLE
        try:
            return await self._serve(counters)
        finally:
            pidfile.release(self.pid_path)
            counters.close()
            if self.opts.ready_file is not None:
                with contextlib.suppress(OSError):
                    self.opts.ready_file.unlink()

    async def _serve(self, counters: Counters) -> int:
        start = int(time.time())
        _startup_counters(counters, start, str(self.po.root))
        core = Scheduler(
            self.config,
            counters,
            zenv=self.opts.zenv,
            start_time=start,
            frozen=self.opts.freeze,
        )
        runner = Runner(
            core,
            self.po,
            hash_levels=self.opts.hash_levels,
            counters=counters,
            dsn_pass=dsn_pass_for(self.opts.zenv),
            hostname=self.opts.zenv.get("HOSTNAME") or socket.gethostname(),
            agent_timeout=self._agent_timeout(),
            lifeline=self.lifeline,
        )
        logger.info(
            "scheduler daemon pid %d started on %s (config %s)",
            os.getpid(),
            self.po.root,
            self.config.source,
        )
        tap = DeliveryTap(core, time.time)
        runner.tap = tap
        monitor = Monitor(core, runner, tap)
        self._open_notify(runner)
        status = await self._open_listeners(core, runner)
        if not status and not await self._open_monitor(monitor):
            status = 1
        if status:
            self._close_notify()
            await self._close_listeners()
            return status
        assert self._server is not None
        self._server.service.metrics = monitor.metrics_text
        self._server.service.events = tap.hub

        plane = ControlPlaneImpl(
            core, runner, self.po, trash_days=_trash_days(self.opts.zenv), tap=tap
        )
        plane.restore()
        if self._server is not None:
            self._server.service.control = plane
        self._install_signals(runner)
        self._write_ready()
        clock = asyncio.create_task(
            _time_server(counters, str(self.po.root), _log_target(self.opts.zenv))
        )
        task = asyncio.create_task(runner.run())
        monitor.runner_task, monitor.listening = task, True
        monitor.start_heartbeat()
        self.systemd.start(monitor.status_line, lambda: not task.done())

        rules = asyncio.create_task(_rule_ticks(plane))
        await self._stop.wait()
        rules.cancel()
        logger.info("shutting down")
        clock.cancel()
        self.systemd.stop()
        monitor.stop_heartbeat()
        if self._server is not None:
            self._server.close()
        if self._monitor is not None:
            self._monitor.close()
        self._close_notify()
        runner.stop()
        await task
        await runner.shutdown(self.opts.shutdown_grace)
        await self._close_listeners()
        self._remove_signals()
        self.systemd.close()
        logger.info("scheduler stopped")
        return 0

    # -- pieces -------------------------------------------------------------------------

    def _open_notify(self, runner: Runner) -> None:
        path = notify_address(
            self.config.params.notifysock,
            self.opts.zenv.get("SCHEDULERNOTIFY"),
            self.po.notify_socket,
        )
        if path is None:
            return
        ns = NotifySocket(path, runner.notify)
        try:
            ns.open()
        except OSError as exc:
            logger.error("cannot open notify socket %s: %s", path, exc)
            return
        self._notify = ns

    def _close_notify(self) -> None:
        if self._notify is not None:
            self._notify.close()
            self._notify = None

    def _agent_timeout(self) -> float:
        """``--agent-timeout``, else ``PARAMagent-timeout``, else 0 (none)."""
        if self.opts.agent_timeout is not None:
            return self.opts.agent_timeout
        return float(self.config.params.agent_timeout or 0)

    def _authfile(self) -> str:
        if self.opts.authfile:
            return self.opts.authfile
        if self.config.params.authfile:
            return self.config.params.authfile
        share = self.opts.zenv.get("MAILSHARE", "/etc/zmailer")
        return str(Path(share) / "scheduler.auth")

    async def _open_listeners(self, core: Scheduler, runner: Runner) -> int:
        """Start the MAILQ v2 server; 0, or the exit status (one line logged)."""
        specs: tuple[str, ...] = self.opts.listen
        if not specs:
            specs = self.config.params.mailqsock
            if not specs and not self.opts.sockets:
                specs = (DEFAULT_LISTEN,)
            try:
                specs = bind_specs(specs, self.opts.zenv.get("BINDADDR"))
            except ValueError as exc:
                logger.error("%s", exc)
                return EX_CONFIG
        params = self.config.params
        try:
            uid, gid = socket_owner(
                self.opts.unix_owner or params.mailqsock_owner,
                self.opts.unix_group or params.mailqsock_group,
            )
        except ValueError as exc:
            logger.error("MAILQ v2 Unix socket owner: %s", exc)
            return EX_CONFIG
        mode = self.opts.unix_mode
        if mode is None:
            mode = params.mailqsock_mode if params.mailqsock_mode is not None else 0o666
        config = ServerConfig(
            authfile=self._authfile(),
            max_sessions=self.opts.max_sessions,
            lifetime=self.opts.session_lifetime,
            unix_owner=uid,
            unix_group=gid,
            unix_mode=mode,
        )
        # the session defences (0 and 0 give ZMailer's session limit byte for byte)
        if params.mailq_reserved_sessions is not None:
            config = dataclasses.replace(
                config, reserved_sessions=params.mailq_reserved_sessions
            )
        if params.mailq_max_per_peer is not None:
            config = dataclasses.replace(config, max_per_peer=params.mailq_max_per_peer)
        server = MailqServer(core, runner, config)
        try:
            await server.start(specs=specs, sockets=self.opts.sockets)
        except (OSError, ValueError, ListenError) as exc:
            logger.error("%s", exc)
            server.close()
            await server.wait_closed()
            cause = exc.__cause__ if isinstance(exc, ListenError) else exc
            busy = isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE
            return EX_UNAVAILABLE if busy else EX_CONFIG
        self._server = server
        return 0

    async def _open_monitor(self, monitor: Monitor) -> bool:
        spec = self.opts.metrics_listen or self.config.params.metrics_listen
        if not spec:
            return True
        # imported here: a daemon without a monitor listener never needs it
        from mailq.server.httpshell import MonitorServer

        server = MonitorServer(monitor.routes())
        try:
            await server.start(spec)
        except (OSError, ValueError) as exc:
            logger.error("cannot listen for the monitor endpoints on %s: %s", spec, exc)
            server.close()
            await server.wait_closed()
            return False
        self._monitor = server
        return True

    async def _close_listeners(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._monitor is not None:
            self._monitor.close()
            await self._monitor.wait_closed()

    def _write_ready(self) -> None:
        path = self.opts.ready_file
        if path is None:
            return
        addresses = self._server.addresses if self._server else []
        if self._monitor is not None:
            addresses += [f"http://{a}/" for a in self._monitor.addresses]
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(f"{a}\n" for a in addresses))
        os.replace(tmp, path)
        logger.info("serving MAILQ v2 on %s", " ".join(addresses) or "(nothing)")

    def _install_signals(self, runner: Runner) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop, sig)
        for sig in (signal.SIGHUP, signal.SIGUSR1):
            loop.add_signal_handler(sig, self._reload, runner)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    def _remove_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
            loop.remove_signal_handler(sig)

    def _on_stop(self, sig: signal.Signals) -> None:
        logger.info("received %s", sig.name)
        self._stop.set()

    def _reload(self, runner: Runner) -> None:
        path = self.opts.config_path
        logger.info("reloading %s", path or "the built-in configuration")
        try:
            config = read_config(path, self.opts.zenv)
        except ConfigError as exc:
            for problem in exc.problems:
                logger.error("reload: %s", problem)
            logger.error("reload failed: keeping the current configuration")
            return
        except OSError as exc:
            logger.error(
                "reload: cannot read %s: %s; keeping the current one", path, exc
            )
            return
        self.config = config
        runner.agents.silence_timeout = self._agent_timeout()
        runner.reconfigure(config)
        logger.info("configuration reloaded from %s", config.source)


def bind_specs(specs: Sequence[str], bindaddr: str | None) -> tuple[str, ...]:
    """``PARAMmailqsock`` TCP specs without an address listen on ZENV ``BINDADDR``
    only, as ZMailer's do (``-l`` specs are taken as given).  ValueError: a BINDADDR
    that names no address."""
    host = bind_address(bindaddr)
    if host is None:
        return tuple(specs)
    out = []
    for spec in specs:
        try:
            parsed = parse_listen_spec(spec)
        except ValueError:
            out.append(spec)  # the listener reports it
            continue
        if parsed.kind == "tcp" and parsed.host is None:
            spec = str(ListenSpec("tcp", port=parsed.port, host=host))
        out.append(spec)
    return tuple(out)


def open_counters(path: str | None) -> Counters:
    """The counter block at ``path``; when the file cannot be used (a full disk, no
    permission) one error line says why and the counts are kept in memory, as ZMailer
    keeps a private block when it cannot attach its file."""
    try:
        return Counters.open(path)
    except (OSError, SpoolError) as exc:
        logger.error("counter file unusable: %s; counting in memory until restart", exc)
        return Counters.open(None)


def _trash_days(zenv: Mapping[str, str]) -> float:
    """``MAILQTRASHDAYS`` (ZENV or environment): days ``DELETE`` keeps messages; 7."""
    text = zenv.get("MAILQTRASHDAYS") or os.environ.get("MAILQTRASHDAYS") or "7"
    try:
        return max(0.0, float(text))
    except ValueError:
        logger.warning("MAILQTRASHDAYS=%r is not a number; keeping 7 days", text)
        return 7.0


async def _rule_ticks(plane: ControlPlaneImpl, every: float = 2.0) -> None:
    """Lift expired suspensions and policies (they persist until then)."""
    while True:
        await asyncio.sleep(every)
        try:
            plane.tick()
        except OSError as exc:
            logger.error("cannot update the rules file: %s", exc)


def _startup_counters(counters: Counters, start: int, postoffice: str) -> None:
    counters.set("SYS.SchedulerMasterPID", os.getpid())
    counters.set("SYS.SchedulerMasterStartTime", start)
    counters.incr("SYS.SchedulerMasterStarts")
    counters.reset_gauges()
    counters.refresh_system(postoffice)
    # ZMailer's [TimeServer] is a child process; our event loop keeps the time itself,
    # so the daemon's pid stands in for it (alive exactly while the scheduler is).
    counters.set("SC.SchedulerTimeserverPID", os.getpid())
    counters.set("SC.SchedulerTimeserverStartTime", start)
    counters.incr("SC.SchedulerTimeserverStarts")
    counters.set("SC.SchedulerTimeserverTime", start)


def _log_target(zenv: Mapping[str, str]) -> str | int | None:
    """What ``SYS.Log*`` measures: the log file our stderr is (as ZMailer measures its
    log file), else ZENV ``LOGDIR`` when it is a directory, else nothing."""
    with contextlib.suppress(OSError):
        if stat.S_ISREG(os.fstat(2).st_mode):
            return 2
    logdir = zenv.get("LOGDIR")
    return logdir if logdir and os.path.isdir(logdir) else None


async def _time_server(
    counters: Counters, postoffice: str, log_target: str | int | None
) -> None:
    """``SC.SchedulerTimeserverTime`` every second, file-system gauges every 25 s."""
    ticks = 0
    while True:
        counters.set("SC.SchedulerTimeserverTime", int(time.time()))
        if ticks % SPACE_CHECK_TICKS == 0:
            counters.refresh_system(postoffice, log_target)
        ticks += 1
        await asyncio.sleep(1)


def run_daemon(opts: DaemonOptions) -> int:
    """Read the configuration and run the daemon until a stop signal; the exit status."""
    try:
        config = read_config(opts.config_path, opts.zenv)
    except ConfigError as exc:
        for problem in exc.problems:
            logger.error("%s", problem)
        return EX_CONFIG
    except OSError as exc:
        logger.error("cannot read %s: %s", opts.config_path, exc)
        return EX_CONFIG
    bad = listener_problems(opts.listen or config.params.mailqsock)
    if bad:
        for line in bad:
            logger.error("%s", line)
        return EX_CONFIG
    if not opts.postoffice.joinpath("transport").is_dir():
        logger.error(
            "%s is not a postoffice (no transport/ directory)", opts.postoffice
        )
        return EX_CONFIG
    # forked now, while the daemon is small and has one thread (scheduler.lifeline)
    lifeline = Lifeline.start()
    try:
        return asyncio.run(Daemon(opts, config, lifeline).run())
    finally:
        if lifeline is not None:
            lifeline.close()

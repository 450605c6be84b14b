"""``mailq-scheduler demo``: a scheduler with a realistic queue on loopback, in one command.

It builds a temporary postoffice with a few hundred messages (:mod:`scheduler.demo.queue`),
writes a ``scheduler.conf`` that routes every ``smtp`` thread to a loopback SMTP sink
(:mod:`scheduler.demo.sink`) which accepts mail for some domains and defers others, writes a
``scheduler.auth``, starts the daemon (``python -m scheduler serve``) with its MAILQ v2
listeners handed over by socket activation (``LISTEN_FDS``; so the printed port is the one
it serves), prints the ``mailq`` commands to try, trickles new messages in, and on Ctrl-C
or SIGTERM stops the daemon, its transport agents and the sink and removes everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import click

from scheduler.demo import queue as demoqueue
from scheduler.demo.sink import Delivery, SmtpSink
from scheduler.lifeline import dies_with_parent
from spool.ids import message_number, spool_id
from spool.layout import Postoffice, init_postoffice
from spool.zenv import ZENV_NAMES

__all__ = [
    "ACTIVATE_WRAPPER",
    "DemoPaths",
    "demo",
    "demo_auth",
    "demo_config",
    "demo_zenv",
    "instructions",
]

log = logging.getLogger(__name__)

READY_TIMEOUT: Final = 60.0
STOP_TIMEOUT: Final = 20.0
HASH_LEVELS: Final = 2
TRY_MARKER: Final = "Try these commands"

# Started as the daemon's argv[0..2]: moves the inherited listening sockets to fd 3, 4, ...
# (through copies above 3 + n, so that no copy lands on a target),
# sets LISTEN_FDS/LISTEN_PID to describe them (LISTEN_PID = its own pid, which the exec'd
# daemon keeps) and execs the daemon, exactly as systemd does (sd_listen_fds(3)).
ACTIVATE_WRAPPER: Final = """\
import fcntl, os, sys
fds = [int(fd) for fd in sys.argv[1].split(",")]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 3 + len(fds)) for fd in fds]
for fd in fds:
    os.close(fd)
for i, fd in enumerate(high):
    os.dup2(fd, 3 + i)
    os.close(fd)
os.environ["LISTEN_FDS"] = str(len(fds))
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDNAMES"] = ":".join(["mailq"] * len(fds))
os.execvp(sys.argv[2], sys.argv[2:])
"""


@dataclass(frozen=True, slots=True)
class DemoPaths:
    """Where the demo keeps its files, all under one directory."""

    root: Path

    @property
    def postoffice(self) -> Path:
        return self.root / "postoffice"

    @property
    def config(self) -> Path:
        return self.root / "scheduler.conf"

    @property
    def auth(self) -> Path:
        return self.root / "scheduler.auth"

    @property
    def socket(self) -> Path:
        return self.root / "mailq.sock"

    @property
    def log(self) -> Path:
        return self.root / "scheduler.log"

    @property
    def ready(self) -> Path:
        return self.root / "scheduler.ready"

    @property
    def mailboxes(self) -> Path:
        return self.root / "mailboxes"

    @property
    def zenv(self) -> Path:
        return self.root / "zmailer.conf"

    def owned(self) -> list[Path]:
        """Everything the demo creates (removed on exit when the directory was given)."""
        return [
            self.postoffice,
            self.config,
            self.auth,
            self.socket,
            self.log,
            self.ready,
            self.mailboxes,
            self.zenv,
        ]


# ------------------------------------------------------------------- pure pieces


def demo_config(paths: DemoPaths, sink_port: int) -> str:
    """The demo's scheduler.conf: ZMailer's shipped layout, smtp routed to the sink."""
    relay = f"-h demo.invalid -F [127.0.0.1] -p {sink_port}"
    return f"""\
# scheduler.conf written by `mailq-scheduler demo` (ZMailer syntax, SCHED-REF 1.9).
# Every smtp destination is relayed to the demo's SMTP sink on 127.0.0.1:{sink_port},
# which accepts some domains and defers others.
PARAMauthfile = "{paths.auth}"

*/*\tinterval=1m
\tidlemax=4m
\texpiry=5d
\texpiry2=2d
\tretries="1 1 2 3 5 8 13 21 34"
\tmaxchannel=0
\tmaxring=20
\tmaxta=0
\toverfeed=150

local/*\tinterval=5m idlemax=9m expiry=5d maxchannel=15 maxring=5
\tcommand="builtin:mailbox -d {paths.mailboxes}"

# Queue-only: only an ETRN (mailq -E <domain>) starts these threads.
smtp-etrn/*\tmaxchannel=199 maxring=20 interval=1h retries="12" queueonly
\tcommand="builtin:smtp -c $channel {relay}"

smtp/*\tmaxchannel=10 maxring=10
\tcommand="builtin:smtp {relay}"

error/*\tinterval=5m idlemax=2m maxchannel=5 queueonly command=builtin:errormail
"""


def demo_zenv(paths: DemoPaths) -> dict[str, str]:
    """The demo's ZENV: everything inside the demo directory, so that a ZMailer
    installation on the same machine (``/etc/zmailer/zmailer.conf``, its ``MAILBIN``
    agents, its counter block) is never touched."""
    return {
        "POSTOFFICE": str(paths.postoffice),
        "MAILSHARE": str(paths.root),
        "MAILVAR": str(paths.root),
        "MAILBIN": str(paths.root / "bin"),
        "MAILBOX": str(paths.mailboxes),
        "LOGDIR": str(paths.root),
        "SNMPSHAREDFILE": str(paths.postoffice / ".mailq-spool.counters"),
    }


def demo_auth(admin_password: str, uid: int) -> str:
    """scheduler.auth: ZMailer's loopback default for ``nobody``, plus ``admin`` from
    loopback and, through our ACL extension ``unix:UID`` (docs/protocol.md), from the
    Unix socket for the user running the demo."""
    loopback = "[127.0.0.0]/8 [ipv6.0::1]/128"
    lines = [
        "# scheduler.auth written by `mailq-scheduler demo` (ZMailer syntax, MQ2-REF 7)",
        "# user:password:TOKENS:ACL",
        f"nobody:nobody:SNMP QQ TT ETRN:{loopback}",
        f"admin:{admin_password}:ALL:{loopback}",
        "# extension: Unix-socket peers with this uid (ZMailer admits none, quirk A4)",
        f"admin:{admin_password}:ALL:unix:{uid}",
    ]
    return "\n".join(lines) + "\n"


def instructions(
    *,
    port: int,
    paths: DemoPaths,
    admin_password: str,
    kill_id: str,
    etrn_domain: str,
    deferring_host: str,
) -> list[str]:
    """The banner: where things are and the exact ``mailq`` commands to try."""
    po = paths.postoffice
    admin = f"-U admin/{admin_password}"
    sock = paths.socket
    return [
        f"MAILQ v2 server on 127.0.0.1:{port} and {sock}",
        f"postoffice {po}",
        f"scheduler.conf {paths.config}",
        f"scheduler.auth {paths.auth}",
        f"scheduler log {paths.log}",
        f"admin password {admin_password}",
        "",
        f"{TRY_MARKER} in another terminal:",
        f"  mailq -p {port}                 # the queue, thread by thread",
        f"  mailq -p {port} -Q              # thread groups (SHOW QUEUE THREADS)",
        f"  mailq -p {port} -QQ             # short summary",
        f"  mailq -p {port} -QQQ            # SNMP figures: Msgs/Rcpnts in, out, stored",
        f"  mailq -p {port} -QQQQ           # every counter",
        f"  POSTOFFICE={po} mailq -p {port} -v",
        "                                 # with ids, senders, recipients, diagnostics",
        f"  mailq -p {port} -c smtp -h {deferring_host}   # one thread (keeps deferring)",
        f"  mailq -p {port} -E {etrn_domain}   # ETRN: flush a queue-only host",
        f"  mailq -p {port} {admin} -K {kill_id}   # KILL MSG (admin)",
        f"  mailq -p {sock} {admin} -QQ",
        "                                 # over the Unix socket (admin only)",
        f"  mailq -p {port} --json          # JSON Lines",
        f"  mailq -p {port} --check --warn-messages 100 --crit-age 4d",
        "                                 # a monitoring-plugin check (exit 0/1/2/3)",
        f"  mailq -p {port} --prometheus    # counters for Prometheus",
        f"  POSTOFFICE={po} mailq -M",
        "                                 # the counter file, read locally",
        "",
        "Press Ctrl-C to stop; the files above are removed unless --keep was given.",
    ]


def daemon_argv(paths: DemoPaths, fds: Sequence[int], verbose: int) -> list[str]:
    """``python -c <activate> FDS python -m scheduler serve ...``."""
    argv = [sys.executable, "-c", ACTIVATE_WRAPPER, ",".join(str(fd) for fd in fds)]
    argv += [sys.executable, "-m", "scheduler", "serve"]
    argv += ["-P", str(paths.postoffice), "-c", str(paths.config)]
    argv += ["-a", str(paths.auth), "--ready-file", str(paths.ready)]
    argv += ["-v"] * verbose
    return argv


# ------------------------------------------------------------------- shell


def _make_mailboxes(root: Path) -> None:
    """Maildirs for the demo's local users, except one, whose mail then bounces."""
    for user in demoqueue.LOCAL_USERS:
        if user == demoqueue.UNKNOWN_LOCAL_USER:
            continue
        for sub in ("tmp", "new", "cur"):
            (root / user / sub).mkdir(parents=True, exist_ok=True)


def _listeners(port: int, path: Path) -> list[socket.socket]:
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        tcp.bind(("127.0.0.1", port))
        tcp.listen(64)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        unix.bind(str(path))
        unix.listen(64)
    except OSError as exc:
        tcp.close()
        unix.close()
        raise click.ClickException(
            f"cannot listen on 127.0.0.1:{port} and {path}: {exc.strerror or exc}"
        ) from exc
    return [tcp, unix]


def _say(text: str) -> None:
    """Print, unless the terminal is gone (a hang-up): the clean-up must go on."""
    with contextlib.suppress(OSError):
        click.echo(text)


class Daemon:
    """The scheduler subprocess, in its own session (Ctrl-C reaches only the demo)."""

    def __init__(self, paths: DemoPaths, verbose: int) -> None:
        self.paths = paths
        self.verbose = verbose
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, listeners: Sequence[socket.socket]) -> int:
        fds = [s.fileno() for s in listeners]
        zenv = demo_zenv(self.paths)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("LISTEN_") and k not in ZENV_NAMES
        }
        env |= zenv | {"ZCONFIG": str(self.paths.zenv)}
        with self.paths.log.open("ab") as logfile:
            self.proc = subprocess.Popen(
                daemon_argv(self.paths, fds, self.verbose),
                pass_fds=fds,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=dies_with_parent(),  # ends with the demo, however it ends
            )
        return self.proc.pid

    async def wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.paths.ready.exists():
            if self.proc.poll() is not None:
                raise click.ClickException(
                    f"the scheduler exited with status {self.proc.returncode}:\n"
                    + self.log_tail()
                )
            if time.monotonic() > deadline:
                raise click.ClickException(
                    f"the scheduler did not start within {READY_TIMEOUT:.0f}s:\n"
                    + self.log_tail()
                )
            await asyncio.sleep(0.1)

    def log_tail(self, lines: int = 20) -> str:
        """The end of the scheduler's log (it is removed with the demo directory)."""
        try:
            text = self.paths.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def stop(self) -> int | None:
        """SIGTERM, wait; then SIGKILL whatever is left of its process group."""
        if self.proc is None:
            return None
        pid = self.proc.pid
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.proc.wait, STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log.warning("scheduler did not stop in %.0fs: killing it", STOP_TIMEOUT)
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait)
        await _reap_group(pid)
        return self.proc.returncode


async def _reap_group(pgid: int) -> None:
    """Transport agents the daemon left behind in its process group: TERM, then KILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        log.warning("stray processes in group %d: sent %s", pgid, sig.name)
        for _ in range(50):
            await asyncio.sleep(0.1)
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return


@dataclass
class Options:
    port: int
    directory: Path | None
    keep: bool
    messages: int
    trickle: float
    seed: int
    verbose: int


class Demo:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.created_root = False
        root = options.directory
        if root is None:
            root = Path(tempfile.mkdtemp(prefix="mailq-demo-"))
            self.created_root = True
        elif not root.exists():
            root.mkdir(parents=True)
            self.created_root = True
        self.paths = DemoPaths(root.resolve())
        self.sink = SmtpSink(demoqueue.sink_policy(), on_delivery=self._delivered)
        self.daemon = Daemon(self.paths, options.verbose)
        self.stopping = asyncio.Event()
        self.rng = random.Random(options.seed + 1)
        self.delivered = 0

    def _delivered(self, delivery: Delivery) -> None:
        self.delivered += 1
        rcpts = ", ".join(delivery.recipients)
        click.echo(f"sink: delivered {delivery.message_id} to {rcpts}")

    def _populate(self, po: Postoffice, now: int) -> list[str]:
        plan = demoqueue.plan_queue(self.options.messages, seed=self.options.seed)
        relpaths = [demoqueue.write_message(po, m, now, HASH_LEVELS) for m in plan]
        summary = demoqueue.summarize(plan)
        click.echo(
            f"queued {summary.messages} messages, {summary.recipients} recipients, "
            f"{summary.hosts} destinations in {po.root}"
        )
        return relpaths

    def _kill_candidate(self, po: Postoffice, relpaths: Sequence[str]) -> str:
        """The spool-id of a message to a deferring host (it stays queued)."""
        for relpath in reversed(relpaths):
            text = po.control_path(relpath).read_text(errors="replace")
            if any(f" {d} " in text for d in demoqueue.DEFERRING_DOMAINS):
                st = po.message_path(relpath).stat()
                number = message_number(relpath)
                return spool_id(number, int(st.st_mtime), st.st_mtime_ns % 10**9)
        return relpaths[-1].rpartition("/")[2]

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # HUP: tty gone
            loop.add_signal_handler(sig, self.stopping.set)
        try:
            return await self._run()
        finally:
            await self._shutdown()
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(sig)

    async def _run(self) -> int:
        paths = self.paths
        po = init_postoffice(paths.postoffice)
        _make_mailboxes(paths.mailboxes)
        sink_port = await self.sink.start("127.0.0.1", 0)
        password = secrets.token_urlsafe(12)
        zenv = demo_zenv(paths)
        paths.zenv.write_text("".join(f"{k}={v}\n" for k, v in zenv.items()))
        paths.config.write_text(demo_config(paths, sink_port))
        paths.auth.write_text(demo_auth(password, os.getuid()))
        paths.auth.chmod(0o600)
        listeners = _listeners(self.options.port, paths.socket)  # fail early if taken
        try:
            port = listeners[0].getsockname()[1]
            relpaths = await asyncio.to_thread(self._populate, po, int(time.time()))
            if self.stopping.is_set():  # Ctrl-C while the queue was written
                return 0
            pid = self.daemon.start(listeners)
        finally:
            for sock in listeners:
                sock.close()
        click.echo(f"scheduler pid {pid}, SMTP sink on 127.0.0.1:{sink_port}")
        await self.daemon.wait_ready()
        banner = instructions(
            port=port,
            paths=paths,
            admin_password=password,
            kill_id=self._kill_candidate(po, relpaths),
            etrn_domain=demoqueue.ETRN_DOMAINS[0],
            deferring_host=demoqueue.DEFERRING_DOMAINS[0],
        )
        click.echo("\n".join(banner), nl=True)
        sys.stdout.flush()
        return await self._serve(po)

    async def _serve(self, po: Postoffice) -> int:
        serial = self.options.messages
        interval = self.options.trickle
        while not self.stopping.is_set():
            timeout = interval if interval > 0 else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout)
            if not self.daemon.running():
                click.echo(
                    "the scheduler stopped:\n" + self.daemon.log_tail(), err=True
                )
                return 1
            if self.stopping.is_set():
                break
            msg = demoqueue.plan_trickle(self.rng, serial)
            serial += 1
            relpath = demoqueue.write_message(po, msg, int(time.time()), HASH_LEVELS)
            log.info("new message %s to %d recipient(s)", relpath, len(msg.recipients))
        return 0

    async def _shutdown(self) -> None:
        _say("stopping ...")
        status = await self.daemon.stop()
        await self.sink.close()
        if status is not None:
            _say(f"scheduler exited with status {status}")
        _say(f"sink accepted {self.delivered} message(s)")
        if self.options.keep:
            _say(f"kept {self.paths.root}")
        elif self.created_root:
            shutil.rmtree(self.paths.root, ignore_errors=True)
            _say(f"removed {self.paths.root}")
        else:
            for path in self.paths.owned():
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
            _say(f"removed the demo's files from {self.paths.root}")


@click.command()
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="MAILQ v2 TCP port on 127.0.0.1 (0: any free port, printed).",
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Use this directory instead of a temporary one.",
)
@click.option("--keep", is_flag=True, help="Keep the files when the demo stops.")
@click.option(
    "--messages",
    type=click.IntRange(1, 100_000),
    default=300,
    show_default=True,
    help="Messages in the initial queue.",
)
@click.option(
    "--trickle",
    type=click.FloatRange(0),
    default=5.0,
    show_default=True,
    help="Seconds between new arrivals (0: none).",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Queue seed.")
@click.option("-v", "--verbose", count=True, help="More log output (repeatable).")
def demo(
    port: int,
    directory: Path | None,
    keep: bool,
    messages: int,
    trickle: float,
    seed: int,
    verbose: int,
) -> None:
    """Run a scheduler with a realistic queue on loopback, and explore it with mailq."""
    logging.basicConfig(
        level=logging.DEBUG
        if verbose > 1
        else logging.INFO
        if verbose
        else logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
    )
    options = Options(port, directory, keep, messages, trickle, seed, verbose)
    status = asyncio.run(Demo(options).run())
    sys.exit(status)

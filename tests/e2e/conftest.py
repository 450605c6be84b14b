"""End-to-end fixtures: the real daemon (``python -m scheduler serve``) as a subprocess on a
temporary postoffice, MAILQ v2 on 127.0.0.1 port 0 (the bound port is read from its
``--ready-file``), and a raw-socket MAILQ v2 client."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mailq.protocol.auth import authenticator
from spool.layout import Postoffice, init_postoffice
from tests.e2e.recorded import DIAG, PLACES, REF, adapted_config, recorded_files

STARTUP_TIMEOUT = 30.0
ADMIN, ADMIN_PW = "admin", "adminpw"

TESTTA_CONF = """\
*/*\tinterval=1s idlemax=30s expiry=5d retries="1 1 2 3"
\tmaxchannel=0 maxring=20 overfeed=10

local/*\tqueueonly command="mailbox"
smtp/*\tcommand="builtin:testta -c $channel"
"""


@dataclass
class DaemonProc:
    root: Path
    po: Postoffice
    conf: Path
    auth: Path
    log_path: Path
    ready: Path
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    address: tuple[str, int] = ("127.0.0.1", 0)
    extra: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self) -> DaemonProc:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self.ready.exists():
            if self.proc.poll() is not None:
                pytest.fail(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                pytest.fail(f"daemon not ready in time:\n{self.log()}")
            time.sleep(0.02)
        first = self.ready.read_text().split()[0]
        host, _, port = first.rpartition(":")
        self.address = (host.strip("[]"), int(port))
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def send(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STARTUP_TIMEOUT) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def query(
        self, *commands: str, user: str = ADMIN, password: str = ADMIN_PW
    ) -> list[str]:
        """AUTH, then each command; returns each reply (a body for multi-line ones)."""
        with socket.create_connection(self.address, timeout=20) as sock:
            reader = sock.makefile("rb")
            assert reader.readline() == b"version zmailer 2.0\n"
            challenge = reader.readline().decode().rstrip("\n")
            sock.sendall(f"AUTH {user} {authenticator(challenge, password)}\n".encode())
            assert reader.readline() == b"+OK\n"
            out = []
            for command in commands:
                sock.sendall(command.encode() + b"\n")
                out.append(_read_reply(reader))
            sock.sendall(b"QUIT\n")
            reader.close()
        return out

    def submit(self, *rcpts: str, hash_levels: int = 0) -> str:
        """``mailq-spool submit`` (sends NEW to the daemon); returns the relpath."""
        result = subprocess.run(
            [
                *(sys.executable, "-m", "spool", "submit", "-P", str(self.po.root)),
                *("-f", "sender@example.com", "-H", str(hash_levels), *rcpts),
            ],
            input=b"Subject: e2e\n\nbody\n",
            capture_output=True,
            check=True,
            env=self.env,
        )
        return result.stdout.decode().split()[-1]


def _read_reply(reader: object) -> str:
    readline: Callable[[], bytes] = reader.readline  # type: ignore[attr-defined]
    first = readline()
    if first != b"+OK until LF.LF\n":
        return first.decode()
    lines = []
    while (line := readline()) not in (b".\n", b""):
        lines.append(line[1:] if line.startswith(b"..") else line)
    return b"".join(lines).decode()


def wait_until(cond: Callable[[], object], limit: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        time.sleep(0.05)


def files_gone(po: Postoffice, relpath: str) -> bool:
    name = relpath.rpartition("/")[2]
    return not list(po.transport.rglob(name)) and not list(po.queue.rglob(name))


@pytest.fixture
def short_root() -> Iterator[Path]:
    # AF_UNIX paths (the notify socket) must stay under ~107 bytes.
    root = Path(tempfile.mkdtemp(prefix="zmd"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


DaemonFactory = Callable[..., DaemonProc]


@pytest.fixture
def daemon_factory(short_root: Path) -> Iterator[DaemonFactory]:
    made: list[DaemonProc] = []

    def make(
        conf_text: str = TESTTA_CONF,
        *,
        env: Mapping[str, str] | None = None,
        args: tuple[str, ...] = (),
        name: str = "d",
        start: bool = True,
    ) -> DaemonProc:
        root = short_root / name
        root.mkdir(exist_ok=True)
        po = init_postoffice(root / "po")
        auth = root / "scheduler.auth"
        auth.write_text(f"{ADMIN}:{ADMIN_PW}:ALL:[127.0.0.0]/8\n")
        auth.chmod(0o600)
        conf = root / "scheduler.conf"
        conf.write_text(conf_text)
        ready = root / "ready"
        full_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("LISTEN_", "TESTTA_"))
        }
        full_env["ZCONFIG"] = str(root / "zmailer.conf")  # absent: no site ZENV
        full_env["POSTOFFICE"] = str(po.root)
        full_env["TESTTA_LOG"] = str(root / "ta.log")
        full_env.update(env or {})
        argv = [sys.executable, "-m", "scheduler", "serve", "-P", str(po.root)]
        argv += ["-c", str(conf), "-a", str(auth), "-l", "127.0.0.1:0"]
        argv += ["--ready-file", str(ready), "--shutdown-timeout", "3", *args]
        d = DaemonProc(root, po, conf, auth, root / "daemon.log", ready, argv, full_env)
        made.append(d)
        return d.start() if start else d

    yield make
    for d in made:
        d.kill()


# -- module-scoped daemons over a recorded queue (test_*_against_daemon.py) -------------


@pytest.fixture(scope="module")
def module_root() -> Iterator[Path]:
    """A short temporary directory shared by the daemons of one test module."""
    root = Path(tempfile.mkdtemp(prefix="zmm"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def build_daemon(
    root: Path,
    conf_text: str,
    *,
    auth_text: str,
    listen: tuple[str, ...] = ("127.0.0.1:0",),
    env: Mapping[str, str] | None = None,
) -> DaemonProc:
    """Like ``daemon_factory(start=False)``, outside a function scope: the postoffice
    under ``root``, the given auth file and ``-l`` listeners (the first one becomes
    ``DaemonProc.address``; all of them are in :func:`ready_addresses`)."""
    root.mkdir(parents=True, exist_ok=True)
    po = init_postoffice(root / "po")
    auth = root / "scheduler.auth"
    auth.write_text(auth_text)
    auth.chmod(0o600)
    conf = root / "scheduler.conf"
    conf.write_text(conf_text)
    ready = root / "ready"
    full_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "TESTTA_"))
    }
    full_env["ZCONFIG"] = str(root / "zmailer.conf")  # absent: no site ZENV
    full_env["POSTOFFICE"] = str(po.root)
    full_env["TESTTA_LOG"] = str(root / "ta.log")
    full_env.update(env or {})
    argv = [sys.executable, "-m", "scheduler", "serve", "-P", str(po.root)]
    argv += ["-c", str(conf), "-a", str(auth)]
    for spec in listen:
        argv += ["-l", spec]
    argv += ["--ready-file", str(ready), "--shutdown-timeout", "3"]
    return DaemonProc(root, po, conf, auth, root / "daemon.log", ready, argv, full_env)


def ready_addresses(d: DaemonProc) -> list[str]:
    """Every bound listener as written to the ready file (``127.0.0.1:N``, ``[::1]:N``,
    or a Unix socket path)."""
    return d.ready.read_text().split()


def queue_file_text(mid: str, control: str) -> str:
    """The message file ZMailer wrote for a recorded control file: the envelope
    (``from``/``to``/``env-end``), the headers kept in the control file after ``m``, and
    ``This is test message <mid>.``; byte-identical to the recorded queue files (and so
    of the recorded sizes: 325, 418, 327, 365, 348)."""
    lines = control.split("\n")
    sender = next(line[2:] for line in lines if line.startswith("e "))
    rcpts = [line.split()[-2] for line in lines if line.startswith("r ")]
    headers = control.split("\nm\n", 1)[1].rstrip("\n") + "\n"
    envelope = f"from <{sender}>\n" + "".join(f"to <{r}>\n" for r in rcpts)
    return f"{envelope}env-end\n{headers}\nThis is test message {mid}.\n"


def write_recorded_queue(
    po: Postoffice,
    controls: Mapping[str, str],
    places: Mapping[str, tuple[str, int]],
    now: float,
) -> None:
    """Place recorded control files as ``transport/<prefix><id>`` with their message
    files, whose mtimes are ``now - age`` (``places[id] = (prefix, age)``)."""
    for mid, body in controls.items():
        prefix, age = places[mid]
        ctl = po.control_path(prefix + mid)
        msg = po.message_path(prefix + mid)
        for path in (ctl, msg):
            path.parent.mkdir(parents=True, exist_ok=True)
        msg.write_text(queue_file_text(mid, body))
        os.utime(msg, (now - age, now - age))
        ctl.write_text(body.rstrip("\n") + "\n\n")


RECORDED_PO = "/var/spool/postoffice"
RECORDED_ENV = {"TESTTA_RULES": "*=deferred", "TESTTA_DEFERALL": "1"}


def start_recorded_daemon(
    root: Path,
    conf_name: str = "scheduler.conf",
    *,
    auth_extra: str = "",
    listen: tuple[str, ...] = ("127.0.0.1:0",),
    env: Mapping[str, str] | None = None,
    queue: bool = True,
) -> DaemonProc:
    """The daemon as recorded: ``configs/<conf_name>`` (smtp commands replaced by testta
    answering ``deferall`` with the recorded diagnostic), ``configs/scheduler.auth`` plus
    ``auth_extra``, ``configs/zmailer.conf`` with the recorded paths moved under ``root``
    (so the counter block is a file, magic 0x33120006), and, with ``queue``, the five
    recorded messages placed as ``Y/F/100001`` … with the recorded ages and sizes.
    Started (listening), not waited for: see :func:`tests.e2e.recorded.tried_once`."""
    auth = (REF / "configs/scheduler.auth").read_text() + auth_extra
    full_env = {**RECORDED_ENV, "TESTTA_DIAG": DIAG, **(env or {})}
    d = build_daemon(
        root, adapted_config(conf_name), auth_text=auth, listen=listen, env=full_env
    )
    zenv = (REF / "configs/zmailer.conf").read_text()
    zenv = zenv.replace(RECORDED_PO, str(d.po.root)).replace("/etc/mail", str(root))
    Path(d.env["ZCONFIG"]).write_text(zenv)
    if queue:
        write_recorded_queue(d.po, recorded_files(), PLACES, time.time())
    return d.start()


def fed_first(d: DaemonProc, host: str, since: float) -> str | None:
    """The spool path of testta's first job for ``host`` after ``since`` (TESTTA_LOG)."""
    for line in (d.root / "ta.log").read_text().splitlines():
        stamp, relpath, *rest = line.split("\t")
        if float(stamp) >= since and rest == [host]:
            return relpath
    return None


# -- masking the values that come from the clock -------------------------------------------

_CLOCK_MASKS = [
    (r"\b(HA|FA)=\{[0-9a-z]+\}s", r"\1={<T>}s"),
    (r"\bP=\{[\d,]+\}", "P={<PID>}"),
    (r"retry in [0-9dhms]+", "retry in <T>"),
    (r"\t1[0-9]{9}(?=\t)", "\t<EPOCH>"),  # expiry, wakeup, last feed in SHOW THREAD
    (r"(expires in |age )-?[0-9dhms]+", r"\1<T>"),
    (r"Uptime: [0-9dhms]+( sec)?", "Uptime: <T>"),
    (r"\b(W|QA)=-?[0-9dhms]+", r"\1=<T>"),
    (r"\|\d+\]", "|<PORT>]"),  # the TA's local port in the smtp diagnostic
]
# SHOW COUNTERS (mailq -QQQQ): values read from the clock, the process table and the disk,
# the MQ2 session counters (they count this test's own earlier sessions; B6 fixed
# ShowQueueThreads), and TA-SMTP.* (written by ZMailer's smtp agent itself; testta
# replaces it). Every other counter is compared exactly.
_COUNTER_MASK = re.compile(
    r"^(Time_now|Block_creation_time|SYS\.Load-Avg\S*|\S*PID|\S*StartTime|"
    r"SC\.SchedulerTimeserver\S*|SYS\.\S*(?:Space|Files)\S*|SC\.MQ2\S*|TA-SMTP\.\S*)"
    r" +\S+$",
    re.M,
)


def mask_volatile(text: str) -> str:
    """Mask clock-derived values (README §5 of the recordings): ages, expiry and retry
    times, uptimes, ``W=``/``QA=``/``HA=``/``FA=``, TA pids, SHOW THREAD epochs, the TA's
    local port in the smtp diagnostic, and the volatile SHOW COUNTERS values."""
    for pattern, repl in _CLOCK_MASKS:
        text = re.sub(pattern, repl, text)
    return _COUNTER_MASK.sub(r"\1 <V>", text)

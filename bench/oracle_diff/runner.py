"""Run one generated spool through the real ZMailer scheduler and through ours; collect
every report.

Both schedulers run frozen (``-F``: no agent is ever started) on identical copies of the
spool with the same scheduler.conf, 2-level hashing, MAILQ v2 on loopback. Once the load
has settled, the same MAILQ v2 commands are sent to each (SHOW SNMP, SHOW QUEUE
SHORT/THREADS/THREADS2, SHOW THREAD for every thread, SHOW COUNTERS) and the real
``mailq`` client is run against each. :func:`collect` returns ``{key: reply text}``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.oracle_diff.gen import Spool, write_spool
from mailq.protocol.auth import authenticator
from spool.layout import init_postoffice

__all__ = ["AUTH", "CONF", "MAILQ_MODES", "ZM", "collect", "oracle_available"]

ZM = Path(os.environ.get("ZM_PREFIX", "/tmp/zm/inst"))
ZM_RUN = Path(os.environ.get("ZM_RUN", "/work/shared/oracle/zm-run"))
REPO = Path(__file__).resolve().parents[2]

CONF = """\
*/*\tinterval=1m idlemax=4m expiry=3d expiry2=1d
\tretries="1 1 2 3 5 8 13 21 34" maxchannel=0 maxring=20 overfeed=150
local/*\tcommand="/bin/cat"
smtp/*\tcommand="/bin/cat"
error/*\tcommand="/bin/cat"
hold/*\tinterval=5m command="/bin/cat"
**/*\tcommand="/bin/cat"
"""
AUTH = "nobody:nobody:ALL: [127.0.0.0]/8\n"
MAILQ_MODES: list[list[str]] = [[], ["-s"], ["-Q"], ["-QQ"], ["-v"]]
STARTUP = 30.0


def oracle_available() -> bool:
    return (ZM / "bin" / "scheduler").exists() and ZM_RUN.exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Mq2:
    """A minimal MAILQ v2 client (AUTH as ``nobody``)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.reader = self.sock.makefile("rb")
        self.reader.readline()  # version
        challenge = self.reader.readline().decode().rstrip("\n")
        self.sock.sendall(
            f"AUTH nobody {authenticator(challenge, 'nobody')}\n".encode()
        )
        self.reader.readline()

    def ask(self, command: str) -> str:
        self.sock.sendall(command.encode() + b"\n")
        first = self.reader.readline()
        if first != b"+OK until LF.LF\n":
            return first.decode("latin-1")
        lines = [first]
        while (line := self.reader.readline()) not in (b".\n", b""):
            lines.append(line[1:] if line[:2] == b".." else line)
        return b"".join(lines).decode("latin-1")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(b"QUIT\n")
        self.reader.close()
        self.sock.close()


def _wait(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + STARTUP
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


def _settled(port: int) -> None:
    """Wait until the daemon answers and its queue summary stops changing."""
    last, same = None, 0
    deadline = time.monotonic() + STARTUP
    while same < 3:
        if time.monotonic() > deadline:
            raise TimeoutError("queue never settled")
        try:
            mq = Mq2(port)
            now = re.sub(r"Uptime: .*", "", mq.ask("SHOW SNMP"))
            mq.close()
        except OSError:
            time.sleep(0.2)
            continue
        same = same + 1 if now == last else 0
        last = now
        time.sleep(0.2)


class Daemon:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, zconf: Path) -> None:
        self.proc, self.port, self.zconf = proc, port, zconf

    def stop(self) -> None:
        """SIGTERM the pid we started and every process of its session (the real
        scheduler's [TimeServer] child)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)  # a leftover child


def start_real(root: Path, *, frozen: bool = True) -> Daemon:
    """The real scheduler on ``root``'s postoffice; ``frozen``: with ``-F``."""
    po, wd = root / "po", root / "wd"
    wd.mkdir()
    port = _free_port()
    env = dict(os.environ, ZM_PREFIX=str(ZM))
    env.pop("ZM_EXTRA_ARGS", None)
    if frozen:
        env["ZM_EXTRA_ARGS"] = "-F"
    argv = [str(ZM_RUN), str(po), str(port), str(root / "scheduler.conf")]
    argv += [str(root / "scheduler.auth"), str(wd)]
    with (root / "daemon.log").open("ab") as log:
        proc = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Daemon(proc, port, wd / "zmailer.conf")


def start_ours(root: Path, zconf: Path, *, frozen: bool = True) -> Daemon:
    """Our scheduler on ``root``'s postoffice; ``frozen``: with ``--freeze``."""
    po, ready = root / "po", root / "ready"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("ZCONFIG", None)
    argv = [sys.executable, "-m", "scheduler", "serve", "-P", str(po), "-HH"]
    argv += ["-c", str(root / "scheduler.conf"), "-a", str(root / "scheduler.auth")]
    argv += ["-l", "127.0.0.1:0", "--counters", "none", "--ready-file", str(ready)]
    if frozen:
        argv.append("--freeze")
    with (root / "daemon.log").open("ab") as log:
        proc = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    _wait(lambda: ready.exists() and ready.read_text().strip() != "", "ready file")
    port = int(ready.read_text().split()[0].rpartition(":")[2])
    return Daemon(proc, port, zconf)


def _prepare(root: Path, spool: Spool, now: float, conf: str = CONF) -> None:
    root.mkdir(parents=True)
    init_postoffice(root / "po")
    (root / "scheduler.conf").write_text(conf)
    auth = root / "scheduler.auth"
    auth.write_text(AUTH)
    auth.chmod(0o600)
    write_spool(spool, root / "po", now)


def _threads(threads2: str) -> list[tuple[str, str]]:
    """``(channel, host)`` of every thread line of a SHOW QUEUE THREADS2 reply."""
    out = []
    for line in threads2.splitlines()[1:]:
        parts = line.split("\t")
        if len(parts) >= 3 and parts[2].startswith("N="):
            ch, host = parts[0], parts[1]
            if ch and host and not any(c in ch + host for c in " \t"):
                out.append((ch, host))
    return out


def _reports(d: Daemon, zconf: Path, root: Path, mailq: bool) -> dict[str, str]:
    mq = Mq2(d.port)
    out: dict[str, str] = {}
    try:
        for cmd in ("SHOW SNMP", "SHOW QUEUE SHORT", "SHOW QUEUE THREADS"):
            out[cmd] = mq.ask(cmd)
        out["SHOW QUEUE THREADS2"] = t2 = mq.ask("SHOW QUEUE THREADS2")
        for ch, host in sorted(set(_threads(t2))):
            out[f"SHOW THREAD {ch} {host}"] = mq.ask(f"SHOW THREAD {ch} {host}")
        out["SHOW COUNTERS"] = mq.ask("SHOW COUNTERS")
    finally:
        mq.close()
    client = ZM / "bin" / "mailq"
    for mode in MAILQ_MODES if mailq and client.exists() else []:
        argv = [str(ZM / "bin" / "mailq"), "-Z", str(zconf), "-p", str(d.port), *mode]
        r = subprocess.run(argv, capture_output=True, timeout=60, check=False)
        text = r.stdout.decode("latin-1")
        if r.returncode:
            text += f"[exit {r.returncode}]\n"
        out["mailq " + " ".join(mode)] = text
    return {k: v.replace(str(root), "<ROOT>") for k, v in out.items()}


def collect(
    spool: Spool,
    work: Path,
    which: tuple[str, ...] = ("real", "ours"),
    now: float | None = None,
    mailq: bool = True,
    conf: str = CONF,
) -> dict[str, dict[str, str]]:
    """Run ``spool`` through each daemon named in ``which`` at the same time (``real``
    may appear twice: the oracle against itself) and return each one's replies, keyed
    by daemon name (``real``, ``real2``, ``ours``)."""
    if now is None:
        now = time.time()
    daemons: dict[str, Daemon] = {}
    roots: dict[str, Path] = {}
    try:
        for n, who in enumerate(which):
            name = who if who not in daemons else who + "2"
            root = roots[name] = work / f"{n}-{name}"
            if root.exists():
                shutil.rmtree(root)
            _prepare(root, spool, now, conf)
            if who == "real":
                daemons[name] = start_real(root)
            else:
                zconf = root / "zmailer.conf"
                zconf.write_text(f"POSTOFFICE={root / 'po'}\nMAILSERVER=127.0.0.1\n")
                daemons[name] = start_ours(root, zconf)
        for name, d in daemons.items():
            _wait(lambda d=d: d.zconf.exists(), "zm-run's zmailer.conf")  # type: ignore[misc]
            try:
                _settled(d.port)
            except TimeoutError:
                rc = d.proc.poll()
                raise RuntimeError(
                    f"{name} died (exit {rc})"
                    if rc is not None
                    else f"{name} never settled"
                ) from None
        return {
            name: _reports(d, d.zconf, roots[name], mailq)
            for name, d in daemons.items()
        }
    finally:
        for d in daemons.values():
            d.stop()

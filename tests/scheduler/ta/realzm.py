"""Running the real ZMailer scheduler (the oracle at /tmp/zm) with our agents.

``RealScheduler(workdir, po, conf_text, zenv_overrides)`` builds a private ZM_PREFIX
whose ``zmailer.conf`` is the installed one with our overrides (``MAILBOX`` ...) and whose
``bin/scheduler`` is the real binary, then starts it through the oracle's ``zm-run``.
``agent_command(name, *args)`` is a wrapper path that runs ``python -m scheduler.ta.name``
under the bare environment ZMailer gives agents (TZ, PATH, ZCONFIG).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ZM = Path("/tmp/zm/inst")
ZM_RUN = Path("/work/shared/oracle/zm-run")
PROJECT = Path(__file__).resolve().parents[3]


def available() -> bool:
    return (ZM / "bin" / "scheduler").is_file() and ZM_RUN.is_file()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                for child in f.read().split():
                    out += [int(child), *_descendants(int(child))]
    return out


class RealScheduler:
    def __init__(
        self, workdir: Path, po: Path, conf: str, zenv: dict[str, str]
    ) -> None:
        self.workdir = workdir
        self.po = po
        self.prefix = workdir / "prefix"
        (self.prefix / "bin").mkdir(parents=True)
        (self.prefix / "bin" / "scheduler").symlink_to(ZM / "bin" / "scheduler")
        lines = []
        for line in (ZM / "zmailer.conf").read_text().splitlines():
            key = line.split("=", 1)[0]
            if key not in zenv:
                lines.append(line)
        lines += [f"{k}={v}" for k, v in zenv.items()]
        (self.prefix / "zmailer.conf").write_text("\n".join(lines) + "\n")
        self.conf = workdir / "scheduler.conf"
        self.conf.write_text(conf)
        self.auth = workdir / "scheduler.auth"
        self.auth.write_text("nobody:nobody:SNMP QQ TT ETRN:  [127.0.0.0]/8\n")
        self.run_dir = workdir / "run"
        self.proc: subprocess.Popen[bytes] | None = None

    def agent_command(self, name: str) -> str:
        wrapper = self.workdir / f"ta-{name}"
        wrapper.write_text(
            "#!/bin/sh\n"
            f"PYTHONPATH={PROJECT}; export PYTHONPATH\n"
            f'exec {sys.executable} -m scheduler.ta.{name} "$@" 2>>{self.agent_log(name)}\n'
        )
        wrapper.chmod(0o755)
        return str(wrapper)

    def agent_log(self, name: str) -> Path:
        """Where the wrapper sends the agent's stderr (its log lines)."""
        return self.workdir / f"ta-{name}.log"

    def agent_said(self, name: str, text: str) -> bool:
        path = self.agent_log(name)
        return path.exists() and text in path.read_text(errors="replace")

    def start(self) -> None:
        env = dict(os.environ, ZM_PREFIX=str(self.prefix))
        self.proc = subprocess.Popen(
            [str(ZM_RUN), str(self.po), str(free_port()), str(self.conf), str(self.auth),
             str(self.run_dir)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def log(self) -> str:
        path = self.run_dir / "log" / "scheduler"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc is None:
            return
        children = _descendants(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        for pid in children:  # the [TimeServer] child and any agent still running
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        self.proc = None


def wait_for(cond: object, limit: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")

"""A ZMailer site on loopback, built from the real ZMailer 3.0.1 at ``/tmp/zm``: its own
zmailer.conf, postoffice and mailboxes in a scratch directory, the real ``sendmail``,
router daemon, scheduler, transport agents, ``mailq`` and Perl ``ZMailer::mailq``, and
our daemon swapped in on the same files.  Used by ``test_upgrade_path.py`` (the
procedure of docs/upgrading.md); nothing here runs without ``/tmp/zm``.

Only ZMailer's programs and its installed configuration (``$MAILSHARE``: router.cf and
the databases, read-only) are used; nothing of it is copied into the project.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import string
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ZM = Path(os.environ.get("ZM_PREFIX", "/tmp/zm/inst"))
BIN = ZM / "bin"
PERL5LIB = ZM.parent / "perl" / "lib"
DEADLINE = 60.0
ADMIN_PW = "nobody"  # the real mailq logs in as nobody/nobody


def available() -> bool:
    return (
        all(
            (BIN / p).is_file()
            for p in (
                "scheduler",
                "router",
                "sendmail",
                "mailq",
                "ta/smtp",
                "ta/mailbox",
            )
        )
        and (ZM / "router.cf").is_file()
    )


def wait_for(cond: Callable[[], object], what: str, limit: float = DEADLINE) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SCHEDULER_CONF = """\
PARAMauthfile = "{auth}"
PARAMmailqsock = "TCP:{port}"

*/*\tinterval=2s idlemax=30s expiry=5d retries="1 1 1 1"
\tmaxchannel=0 maxring=20

local/*\tcommand="mailbox"
error/*\tcommand=errormail
hold/*\tcommand=hold
smtp/*\tcommand="smtp -c $channel -x -F [127.0.0.1] -p {sink}"
"""


@dataclass
class Site:
    root: Path
    sink_port: int
    port: int = field(default_factory=free_port)
    log: list[str] = field(default_factory=list)
    ours: subprocess.Popen[bytes] | None = None

    # -- layout ----------------------------------------------------------------------

    @property
    def zconf(self) -> Path:
        return self.root / "zmailer.conf"

    @property
    def po(self) -> Path:
        return self.root / "po"

    @property
    def mail(self) -> Path:
        return self.root / "mail"

    @property
    def conf(self) -> Path:
        return self.root / "scheduler.conf"

    @property
    def auth(self) -> Path:
        return self.root / "scheduler.auth"

    @property
    def counter_file(self) -> Path:
        return self.po / ".zmailer.SNMP.block"

    def note(self, text: str) -> None:
        self.log.append(text)

    def build(self) -> Site:
        """zmailer.conf (the installed one with this site's paths), the postoffice with
        ZMailer's modes and two-level hashing, the mailbox directory, the configs."""
        overrides = {
            "ZCONFIG": str(self.zconf),
            "POSTOFFICE": str(self.po),
            "MAILBOX": str(self.mail),
            "LOGDIR": str(self.root / "log"),
            "ROUTERNOTIFY": str(self.po / ".router.notify"),
            "SCHEDULERNOTIFY": str(self.po / ".scheduler.notify"),
            "SNMPSHAREDFILE": str(self.counter_file),
            "BINDADDR": "[127.0.0.1]",
            "MAILSERVER": "127.0.0.1",
        }
        lines = []
        for line in (ZM / "zmailer.conf").read_text().splitlines():
            key = line.split("=", 1)[0]
            lines.append(f"{key}={overrides.pop(key)}" if key in overrides else line)
        lines += [f"{k}={v}" for k, v in overrides.items()]
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)  # ZMailer's sendmail submits as the calling user
        self.zconf.write_text("\n".join(lines) + "\n")
        (self.root / "log").mkdir(exist_ok=True)
        self.mail.mkdir(exist_ok=True)
        self.mail.chmod(0o1777)
        for name in ("deferred", "freezer", "postman", "public", "router"):
            (self.po / name).mkdir(parents=True, exist_ok=True)
        for name in ("public", "router"):
            (self.po / name).chmod(0o1777)
        for name in ("queue", "transport", "router"):
            for a in string.ascii_uppercase:
                for b in string.ascii_uppercase:
                    (self.po / name / a / b).mkdir(parents=True, exist_ok=True)
        self.auth.write_text(f"nobody:{ADMIN_PW}:ALL:[127.0.0.0]/8\n")
        self.auth.chmod(0o600)
        self.conf.write_text(
            SCHEDULER_CONF.format(auth=self.auth, port=self.port, sink=self.sink_port)
        )
        return self

    # -- ZMailer's programs ----------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
        env["ZCONFIG"] = str(self.zconf)
        return env

    def sendmail(self, sender: str, *rcpts: str, subject: str) -> None:
        """Submit with ZMailer's sendmail (into ``$POSTOFFICE/router``)."""
        body = f"Subject: {subject}\nTo: {', '.join(rcpts)}\n\n{subject} body\n"
        subprocess.run(
            [str(BIN / "sendmail"), "-f", sender, *rcpts],
            input=body.encode(),
            env=self.env(),
            check=True,
            timeout=DEADLINE,
        )

    def start_router(self) -> None:
        subprocess.run(
            [str(BIN / "router"), "-dkn", "1", "-Z", str(self.zconf)],
            env=self.env(),
            check=True,
            timeout=DEADLINE,
        )
        wait_for(lambda: self._pid(".pid.router"), "the router's pid file")

    def stop_router(self) -> None:
        self._stop_group(self._pid(".pid.router"))

    def route_all(self) -> None:
        """Wait until the router daemon has routed every submitted file."""
        wait_for(
            lambda: not [p for p in (self.po / "router").rglob("*") if p.is_file()],
            "the router to empty router/",
        )

    def start_zmailer(self) -> int:
        """ZMailer's scheduler as a site runs it (detached, the counter file attached)."""
        (self.po / ".pid.scheduler").unlink(missing_ok=True)
        subprocess.run(
            [
                *(str(BIN / "scheduler"), "-S", "-H", "-H", "-Z", str(self.zconf)),
                *("-f", str(self.conf), "-P", str(self.po)),
                *("-L", str(self.root / "log" / "scheduler")),
            ],
            env=self.env(),
            check=True,
            timeout=DEADLINE,
            cwd=self.root,
        )
        wait_for(lambda: self._pid(".pid.scheduler"), "ZMailer's pid file")
        wait_for(self._answers, "ZMailer's MAILQ v2 port")
        return self._pid(".pid.scheduler")

    def stop_zmailer(self) -> None:
        from spool.counterfile import read_counters

        pid = self._pid(".pid.scheduler")
        with read_counters(str(self.counter_file)) as block:
            timeserver = block.get("SC.SchedulerTimeserverPID")
        self._stop_pid(pid)
        if timeserver:
            self._stop_pid(timeserver)  # it follows its parent within a second anyway
        wait_for(lambda: not self._agents(), "ZMailer's agents to exit")

    def mailq(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The real ``mailq`` (-Z must come first: it reads options in order)."""
        return subprocess.run(
            [str(BIN / "mailq"), "-Z", str(self.zconf), "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            env=self.env(),
        )

    def perl_mailq(self, *commands: str) -> subprocess.CompletedProcess[str]:
        script = (
            "use ZMailer::mailq;"
            f"my $q = ZMailer::mailq::new('127.0.0.1', '{self.port}') or die 'connect';"
            f"my ($rc, $t) = $q->login('nobody', '{ADMIN_PW}');"
            "print \"login $rc\\n\"; die 'login' unless $rc eq '+';"
            "foreach my $c (@ARGV) { my ($rc, @l) = $q->showcmd($c);"
            ' print "== $c $rc ", scalar(@l), "\\n"; print map { "$_\\n" } @l; }'
            'my ($b) = $q->bye(); print "bye $b\\n";'
        )
        return subprocess.run(
            ["perl", "-e", script, *commands],
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            env={**self.env(), "PERL5LIB": str(PERL5LIB)},
        )

    # -- ours ------------------------------------------------------------------------

    def start_ours(self) -> None:
        ready = self.root / "ours.ready"
        ready.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "scheduler", "serve", "-Z", str(self.zconf)]
        argv += ["-P", str(self.po), "-c", str(self.conf), "--ready-file", str(ready)]
        with (self.root / "ours.log").open("ab") as out:
            self.ours = subprocess.Popen(
                argv,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def up() -> bool:
            assert self.ours is not None
            if self.ours.poll() is not None:
                raise AssertionError(f"our daemon exited:\n{self.ours_log()}")
            return ready.exists()

        wait_for(up, "our daemon")
        self.note(f"our daemon listens on {ready.read_text().split()}")

    def stop_ours(self) -> int:
        assert self.ours is not None
        self.ours.send_signal(signal.SIGTERM)
        code = self.ours.wait(timeout=DEADLINE)
        wait_for(lambda: not self._agents(), "our agents to exit")
        return code

    def ours_log(self) -> str:
        return (self.root / "ours.log").read_text(errors="replace")

    # -- what is where ---------------------------------------------------------------

    def control_files(self) -> list[Path]:
        return sorted(p for p in (self.po / "transport").rglob("*") if p.is_file())

    def mbox(self, user: str = "root") -> str:
        path = self.mail / user
        return path.read_text(errors="replace") if path.exists() else ""

    def cleanup(self) -> None:
        if self.ours is not None and self.ours.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.ours.pid, signal.SIGKILL)
            self.ours.wait()
        for name in (".pid.scheduler", ".pid.router"):
            with contextlib.suppress(AssertionError, OSError):
                self._stop_group(self._pid(name))

    # -- helpers ---------------------------------------------------------------------

    def _pid(self, name: str) -> int:
        try:
            text = (self.po / name).read_text().strip()
        except OSError:
            return 0
        return int(text) if text.isdigit() else 0

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                return s.recv(64).startswith(b"version zmailer")
        except OSError:
            return False

    def _agents(self) -> list[int]:
        """Pids of processes running one of ZMailer's agents for this site."""
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                cmd = (proc / "cmdline").read_bytes().split(b"\0")[0].decode()
                env = (proc / "environ").read_bytes()
                if cmd.startswith(str(BIN / "ta")) and str(self.zconf).encode() in env:
                    found.append(int(proc.name))
        return found

    @staticmethod
    def _stop_pid(pid: int) -> None:
        if pid <= 0:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not _alive(pid), f"pid {pid} to exit")

    @staticmethod
    def _stop_group(pid: int) -> None:
        if pid <= 0:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) == pid:  # a detached daemon leads its own group
                os.killpg(pid, signal.SIGTERM)
            else:
                os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not _alive(pid), f"pid {pid} to exit")


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return re.sub(r"^.*\) ", "", stat)[:1] not in ("Z", "X")

"""The recorded raw MAILQ v2 sessions (``zmailer-transcripts/raw/``) replayed over real
sockets to our daemon loaded with the recorded queue: what it sends must be the recorded
``.s2c`` byte for byte, after masking the challenge and clock values (``mask_volatile``).

AUTH digests are recomputed against our challenge (when they were valid for the recorded
one), and the spool-id of case 81 against our message file's mtime. Where a documented fix
(docs/protocol.md, docs/compatibility.md) changes bytes, the recording is patched with our
documented bytes, each patch naming its quirk id.

Arbitrary orders, as in ZMailer: the two smtp threads (which one finished its attempt last)
and the vertices of a thread (shuffled when the first TA attaches, SCHED-REF 4.4) are
compared as sets; which vertex was fed (SHOW THREAD field 7) is compared by position.
"""

from __future__ import annotations

import ast
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from io import BufferedReader
from pathlib import Path

import pytest

from mailq.auth import authenticator

from .conftest import (
    DaemonProc,
    mask_volatile,
    ready_addresses,
    start_recorded_daemon,
    wait_until,
)
from .test_replay_daemon import REF, tried_once

pytestmark = pytest.mark.skipif(not REF.is_dir(), reason="recordings not available")

RAW = REF / "raw"
PASSWORDS = {"admin": "adminpw", "qqonly": "qqpw", "nobody": "nobody"}
PASSWORDS["unixadmin"] = "unixpw"
CHALLENGE = re.compile(
    rb"220 MAILQ-V2-CHALLENGE: (\d+)\.(\d+)\.(\d+)\.([0-9a-f]{32})\n"
)
STANDARD_AUTH = (REF / "configs/scheduler.auth").read_text() if REF.is_dir() else ""
UNIX_AUTH = STANDARD_AUTH + "unixadmin:unixpw:ALL:\n"  # raw/A2
NO_MATCH_AUTH = "admin:adminpw:ALL:[10.0.0.0]/8\n"  # raw/92
NONE_AUTH = "admin:adminpw:NONE:[127.0.0.0]/8\nnobody:nobody:SNMP:[127.0.0.0]/8\n"


# -- replaying one recorded session ------------------------------------------------------


def log_events(name: str) -> list[tuple[str, bytes]]:
    """The ``.log`` timeline as (``C`` or ``S``, bytes): the client's writes as recorded
    (pipelined chunks stay one write)."""
    events = []
    for line in (RAW / f"{name}.log").read_text().splitlines():
        m = re.match(r"\s*[\d.]+ ([CS]): (b['\"].*)$", line)
        if m:
            events.append((m[1], ast.literal_eval(m[2])))
    return events


@dataclass
class Replay:
    """One recorded session against ``connect()``; ``hooks[i]`` runs before the i-th
    client write; ``ids`` maps recorded identifiers (spool-ids) to ours."""

    connect: Callable[[], socket.socket]
    hooks: dict[int, Callable[[], None]] = field(default_factory=dict)
    ids: dict[bytes, bytes] = field(default_factory=dict)
    digests: dict[bytes, bytes] = field(default_factory=dict)
    challenge: bytes = b""

    def run(self, name: str) -> tuple[bytes, bytes]:
        """(received, expected): expected is the recording with our challenge, digests
        and ids put in."""
        expected = (RAW / f"{name}.s2c").read_bytes()
        recorded = CHALLENGE_LINE.search(expected)
        with self.connect() as sock, sock.makefile("rb") as reader:
            received = self._talk(name, sock, reader, recorded[1] if recorded else b"")
        if recorded is not None:
            assert CHALLENGE.fullmatch(self.challenge + b"\n"), self.challenge  # A10
            expected = expected.replace(recorded[1], self.challenge)
        for old, new in (self.digests | self.ids).items():
            expected = expected.replace(old, new)
        return received, expected

    def _talk(
        self,
        name: str,
        sock: socket.socket,
        reader: BufferedReader,
        old_challenge: bytes,
    ) -> bytes:
        received = b""
        greeted = False
        writes = 0
        for direction, data in log_events(name):
            if direction == "S":
                if not greeted:
                    greeted = True
                    received += reader.readline()
                    second = reader.readline()
                    received += second
                    self.challenge = second.rstrip(b"\n")
                continue
            if writes in self.hooks:
                self.hooks[writes]()
            writes += 1
            data = self._rewrite(data, old_challenge)
            sock.sendall(data)
            if greeted:
                for command in data.split(b"\n")[:-1]:
                    received += read_reply(reader, command)
        return received + reader.read()

    def _rewrite(self, data: bytes, old_challenge: bytes) -> bytes:
        for old, new in self.ids.items():
            data = data.replace(old, new)

        def digest(m: re.Match[bytes]) -> bytes:
            password = PASSWORDS.get(m[1].decode())
            if password is None or not old_challenge:
                return m[0]
            if m[2].decode() != authenticator(old_challenge.decode(), password):
                return m[0]  # a deliberately wrong digest stays wrong
            ours = authenticator(self.challenge.decode(), password).encode()
            self.digests[m[2]] = ours
            return b"AUTH " + m[1] + b" " + ours

        return re.sub(rb"AUTH (\S+) ([0-9a-f]{32})", digest, data)


CHALLENGE_LINE = re.compile(rb"^(220 MAILQ-V2-CHALLENGE: \S+)$", re.M)


def read_reply(reader: BufferedReader, command: bytes) -> bytes:
    """One reply: a line, a whole ``+OK until LF.LF`` body, or a KILL line and the empty
    line after it (B2 keep)."""
    line = reader.readline()
    out = line
    if line == b"+OK until LF.LF\n":
        while (body := reader.readline()) not in (b".\n", b""):
            out += body
        out += body
    elif command.startswith(b"KILL") and line != b"-No KILL allowed for you.\n":
        out += reader.readline()
    return out


# -- comparing -----------------------------------------------------------------------------

_SMTP_THREAD = re.compile(
    rb"^(    smtp/example\.(net|org)/0\t|smtp\texample\.(net|org)\t)"
)
_ROW = re.compile(rb"^[A-Z]/[A-Z]/\d+\t")


def canonical(data: bytes) -> bytes:
    """Masked bytes with the arbitrary orders normalised: runs of smtp thread lines
    sorted; runs of SHOW THREAD rows sorted, except field 7 (last feed), which stays in
    place, so "the first vertex was fed, the others not" is still compared."""
    lines = mask_volatile(data.decode()).encode().split(b"\n")
    out: list[bytes] = []
    i = 0
    while i < len(lines):
        j = i
        if _SMTP_THREAD.match(lines[i]):
            while j < len(lines) and _SMTP_THREAD.match(lines[j]):
                j += 1
            out += sorted(lines[i:j])
        elif _ROW.match(lines[i]):
            while j < len(lines) and _ROW.match(lines[j]):
                j += 1
            rows = [line.split(b"\t") for line in lines[i:j]]
            fed = [r[6] for r in rows]
            rest = sorted(r[:6] + r[7:] for r in rows)
            out += [
                b"\t".join([*r[:6], f, *r[6:]]) for r, f in zip(rest, fed, strict=True)
            ]
        else:
            out.append(lines[i])
            j = i + 1
        i = j
    return b"\n".join(out)


def patch(expected: bytes, old: bytes, new: bytes, count: int = 1) -> bytes:
    """Replace recorded bytes by our documented ones; the recorded bytes must be there."""
    assert expected.count(old) == count, old
    return expected.replace(old, new)


# -- the daemons -------------------------------------------------------------------------


@dataclass
class Daemons:
    main: DaemonProc
    timing: DaemonProc
    empty: DaemonProc
    unix: str

    def tcp(self, d: DaemonProc) -> Callable[[], socket.socket]:
        return lambda: socket.create_connection(d.address, timeout=20)

    def unix_socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(20)
        sock.connect(self.unix)
        return sock

    def set_auth(self, text: str) -> None:
        """The auth file is re-read for every connection (docs/protocol.md)."""
        self.main.auth.write_text(text)


def _no_wakeup_pending(d: DaemonProc) -> bool:
    return "W=" not in d.query("SHOW QUEUE THREADS2")[0]


@pytest.fixture(scope="module")
def daemons(module_root: Path) -> Iterator[Daemons]:
    """``main``: the recorded queue and configs; testta sleeps 0.5 s per job so that the
    report right after an ETRN sees its agents at work, as in the recording. ``timing``:
    scheduler-timing.conf (no agent ever runs). ``empty``: no queue (raw/95)."""
    made: list[DaemonProc] = []
    try:
        unix = f"{module_root}/main.sock"
        main = start_recorded_daemon(
            module_root / "main",
            listen=("127.0.0.1:0", f"UNIX:{unix}"),
            env={"TESTTA_SLEEP": "0.5"},
        )
        made.append(main)
        timing = start_recorded_daemon(module_root / "timing", "scheduler-timing.conf")
        made.append(timing)
        empty = start_recorded_daemon(module_root / "empty", queue=False)
        made.append(empty)
        assert ready_addresses(main)[1] == f"UNIX:{unix}"
        wait_until(lambda: tried_once(main), 30, "both smtp threads tried once")
        wait_until(lambda: _no_wakeup_pending(timing), 30, "first wakeups passed")
        yield Daemons(main, timing, empty, unix)
    finally:
        for d in made:
            d.kill()


def assert_replay(
    replay: Replay, name: str, fix: Callable[[bytes], bytes] = bytes
) -> None:
    received, expected = replay.run(name)
    assert canonical(received) == canonical(fix(expected))


# -- the main run, before ETRN and KILL: read-only cases -----------------------------------

READ_ONLY = ["01", "02", "03", "04", "05", "06", "07", "10", "11", "12", "13", "14"]
READ_ONLY += ["15", "16", "17", "18", "20", "21", "22", "23", "24", "25", "26", "27"]
READ_ONLY += ["28", "30", "31", "40"]


def case(number: str) -> str:
    """``01`` -> ``01-greeting``."""
    return next(RAW.glob(f"{number}-*.s2c")).stem


@pytest.mark.parametrize("number", READ_ONLY)
def test_main_run_case(daemons: Daemons, number: str) -> None:
    assert_replay(Replay(daemons.tcp(daemons.main)), case(number))

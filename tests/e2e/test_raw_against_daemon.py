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
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from io import BufferedReader
from pathlib import Path

import pytest

from mailq.protocol.auth import authenticator
from spool.ids import spool_id
from tests.e2e.conftest import (
    DaemonProc,
    fed_first,
    mask_volatile,
    ready_addresses,
    start_recorded_daemon,
    wait_until,
)
from tests.e2e.recorded import REF, tried_once

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
    # set by the raw/80 replay: the example.net thread's attempts after its ETRN run
    net_attempts: int = 2

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
    """``main``: the recorded queue and configs; testta sleeps 1 s per job so that the
    report right after an ETRN sees its agents at work, as in the recording. ``timing``:
    scheduler-timing.conf (no agent ever runs). ``empty``: no queue (raw/95)."""
    made: list[DaemonProc] = []
    try:
        unix = f"{module_root}/main.sock"
        main = start_recorded_daemon(
            module_root / "main",
            listen=("127.0.0.1:0", f"UNIX:{unix}"),
            env={"TESTTA_SLEEP": "1"},
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


# -- AF_UNIX (before the state changes: the unix-socket run had the same queue) -------------


def test_unix_socket_standard_auth_file_is_550(daemons: Daemons) -> None:
    # every line of the standard file has an IP ACL: no Unix peer matches (A4 keep)
    assert_replay(Replay(daemons.unix_socket), case("A0"))


def test_unix_socket_empty_acl_user(daemons: Daemons) -> None:
    def fix(expected: bytes) -> bytes:
        # The recording was made 10 s after its scheduler started, before the queue-only
        # smtp-etrn thread's first wakeup (start + r[0] = 12 s, S36 keep); we replay it
        # after that wakeup (start + 1 s here: recorded.adapted_config), so its THREADS2 line has no W= any more (a clock value).
        return patch(expected, b"\tA=0\tW=2s\tQA=56s\n", b"\tA=0\tQA=56s\n")

    daemons.set_auth(UNIX_AUTH)
    try:
        assert_replay(Replay(daemons.unix_socket), case("A2"), fix)
    finally:
        daemons.set_auth(STANDARD_AUTH)


# -- the state changes: raw/80, 81, 82, then 93 and 92 (in this order) ---------------------

# B16 fixed (ETRN lower-cased): "ETRN EXAMPLE.ORG" starts the example.org thread too.
B16_REPLIES = (
    b"+OK; an ETRN started something.\n+OK; an ETRN started something.\n"
    b"+OK; an ETRN didn't start anything.\n",
    b"+OK; an ETRN started something.\n" * 3,
)
# ... so right after the ETRNs its idle agent is at work as well (B16) ...
B16_RUNNING = (
    b"    smtp/example.org/0\t\tN=2   R=2   A=1  W=35s QA=2h2m28s\n"
    b"    smtp/example.net/0\t\tN=2   R=3   A=1  P={16678} HA={0}s FA={0}s OF={1} "
    b"S={STUFF} UF=1 QA=3h23s\n"
    b"\tThreads:    2 Msgs:     4 Procs:   2 Idle:   1 ",
    b"    smtp/example.org/0\t\tN=2   R=2   A=1  P={1} HA={0}s FA={0}s OF={1} "
    b"S={STUFF} UF=1 QA=2h2m28s\n"
    b"    smtp/example.net/0\t\tN=2   R=3   A=1  P={16678} HA={0}s FA={0}s OF={1} "
    b"S={STUFF} UF=1 QA=3h23s\n"
    b"\tThreads:    2 Msgs:     4 Procs:   2 Idle:   0 ",
)
B16_KIDS = (b"Kids: 3  Idle:  1  Msgs:   5", b"Kids: 3  Idle:  0  Msgs:   5")
# ... and it has made one more attempt (B16).
B16_ORG_TRIED = (
    b"    smtp/example.org/0\t\tN=2   R=2   A=1  W=32s",
    b"    smtp/example.org/0\t\tN=2   R=2   A=2  W=32s",
)
# KILL THREAD answers "-Unknown request." and deletes nothing, as ZMailer (issue 12):
# the example.org thread stays; B16: it has made one more attempt than in the recording.
B16_ORG_AFTER = [
    (
        b"    smtp/example.org/0\t\tN=1   R=1   A=1  W=32s",
        b"    smtp/example.org/0\t\tN=1   R=1   A=2  W=32s",
    ),
    (b"smtp\texample.org\tN=1\tR=1\tA=1\t", b"smtp\texample.org\tN=1\tR=1\tA=2\t"),
]


def after_kill_thread(expected: bytes) -> bytes:
    before = expected
    for old, new in B16_ORG_AFTER:
        expected = expected.replace(old, new)
    assert expected != before, "no example.org thread in this recording"
    return expected


def net_attempts(expected: bytes, attempts: int) -> bytes:
    """SCHED-REF 4.4/4.5: the agent an ETRN attaches shuffles the thread's vertices; when
    100002's two-recipient vertex is fed first, its deferred + deferall reports count
    two attempts (ZMailer counts reports), so A=3. The recording fed 100001 first: A=2."""
    if attempts == 2:
        return expected
    expected = expected.replace(
        b"smtp/example.net/0\t\tN=2   R=3   A=2 ",
        b"smtp/example.net/0\t\tN=2   R=3   A=3 ",
    )
    return expected.replace(
        b"\texample.net\tN=2\tR=3\tA=2\t", b"\texample.net\tN=2\tR=3\tA=3\t"
    )


def test_etrn(daemons: Daemons) -> None:
    main = daemons.main

    def settled() -> bool:
        threads2 = main.query("SHOW QUEUE THREADS2")[0]
        return "P=" not in threads2 and "etrn.example.com\tN=1\tR=1\tA=1\t" in threads2

    # the recording waited 3 s before its second SHOW QUEUE THREADS: we wait until the
    # three agents have reported (testta sleeps 1 s per job)
    replay = Replay(daemons.tcp(main), hooks={7: lambda: wait_until(settled)})
    since = time.time()
    received, expected = replay.run(case("80"))
    if fed_first(main, "example.net", since) == "Y/G/100002":
        daemons.net_attempts = 3
    expected = patch(expected, *B16_REPLIES)
    expected = patch(expected, *B16_RUNNING)
    expected = patch(expected, *B16_KIDS)
    expected = patch(expected, *B16_ORG_TRIED)
    expected = net_attempts(expected, daemons.net_attempts)
    assert canonical(received) == canonical(expected)


def test_kill(daemons: Daemons) -> None:
    main = daemons.main
    st = (main.po.root / "queue/Y/H/100003").stat()
    ours = spool_id(100003, int(st.st_mtime), st.st_mtime_ns % 10**9)
    replay = Replay(daemons.tcp(main), ids={b"S100003AbmKVBkC35DCm": ours.encode()})
    received, expected = replay.run(case("81"))
    expected = patch(expected, B16_ORG_TRIED[0], B16_ORG_TRIED[1])
    # B3 fixed: an unknown id is not "KILLed"; KILL THREAD as ZMailer (issue 12)
    expected = patch(
        expected,
        b"+OK; KILLed something.\n\n-Unknown request.\n\n-Unknown request.\n\n",
        b"-No such message.\n\n-Unknown request.\n\n-Unknown request.\n\n",
    )
    kills = expected.index(b"-No such message.")
    expected = expected[:kills] + after_kill_thread(expected[kills:])
    expected = net_attempts(expected, daemons.net_attempts)
    assert canonical(received) == canonical(expected)

    # B4: silently, no DSN; control and message files of both messages unlinked
    def killed_files_gone() -> bool:
        return not any(main.po.root.rglob("10000[34]"))

    wait_until(killed_files_gone, what="100003 and 100004 unlinked")
    assert sorted(p.name for p in main.po.transport.rglob("1*")) == [
        "100001",
        "100002",
        "100005",
    ]


def test_after_kill(daemons: Daemons) -> None:
    received, expected = Replay(daemons.tcp(daemons.main)).run(case("82"))
    expected = net_attempts(after_kill_thread(expected), daemons.net_attempts)
    assert canonical(received) == canonical(expected)


def test_auth_line_with_only_none_is_skipped(daemons: Daemons) -> None:
    daemons.set_auth(NONE_AUTH)
    try:
        assert_replay(Replay(daemons.tcp(daemons.main)), case("93"))
    finally:
        daemons.set_auth(STANDARD_AUTH)


def test_no_matching_acl_is_550(daemons: Daemons) -> None:
    daemons.set_auth(NO_MATCH_AUTH)
    try:
        assert_replay(Replay(daemons.tcp(daemons.main)), case("92"))
    finally:
        daemons.set_auth(STANDARD_AUTH)


# -- an empty queue ------------------------------------------------------------------------


def test_empty_queue(daemons: Daemons) -> None:
    assert_replay(Replay(daemons.tcp(daemons.empty)), case("95"))


# -- scheduler-timing.conf: every channel queue-only, no agent ever runs ---------------------

TIMING_GROUPS = (
    "smtp/*/0\n"
    "    smtp/example.net/0\t\tN=2   R=3   A=0  QA=<T>\n"
    "    smtp/example.org/0\t\tN=2   R=2   A=0  QA=<T>\n"
    "\tThreads:    2 Msgs:     4 Procs:   0 Idle:   0 Plim:  50 Flim: 150 Tlim: 1\n"
    "local/*/0\n"
    "    local/nosuchuser/0\t\tN=1   R=1   A=0  QA=<T>\n"
    "    local/postmaster/0\t\tN=1   R=1   A=0  QA=<T>\n"
    "\tThreads:    2 Msgs:     2 Procs:   0 Idle:   0 Plim:   5 Flim: 150 Tlim: 1\n"
    "smtp-etrn/*/0\n"
    "    smtp-etrn/etrn.example.com/0 N=1   R=1   A=0  QA=<T>\n"
    "\tThreads:    1 Msgs:     1 Procs:   0 Idle:   0 Plim:  20 Flim: 150 Tlim: 1\n"
)
TIMING_TRAILER = (
    "Kids: 0  Idle:  0  Msgs:   5  Thrds:   5  Rcpnts:    7  Uptime: <T>\n"
    "Msgs in 5 out 0 stored 5 Rcpnts in 8 out 0 stored 8\n"
)
TIMING_THREADS2 = (
    "smtp\texample.net\tN=2\tR=3\tA=0\tQA=<T>\n"
    "smtp\texample.org\tN=2\tR=2\tA=0\tQA=<T>\n"
    "local\tnosuchuser\tN=1\tR=1\tA=0\tQA=<T>\n"
    "local\tpostmaster\tN=1\tR=1\tA=0\tQA=<T>\n"
    "smtp-etrn\tetrn.example.com\tN=1\tR=1\tA=0\tQA=<T>\n"
)
# SHOW THREAD in load order (no agent ever shuffled a thread): the summary, then per row
# spool, index, sender, offset; expiry, wakeup, last feed 0 (never), 0 attempts, "thread"
# (B20) and no diagnostic follow.
TIMING_ROWS = {
    "smtp example.net": (
        "N=2   R=3   A=0  QA=<T>",
        [
            ("Y/F/100001", 0, "alice@example.com", 111),
            ("Y/G/100002", 0, "alice@example.com", 160),
            ("Y/G/100002", 1, "alice@example.com", 111),
        ],
    ),
    "smtp example.org": (
        "N=2   R=2   A=0  QA=<T>",
        [
            ("Y/G/100002", 0, "alice@example.com", 208),
            ("Y/H/100003", 0, "frank@example.com", 111),
        ],
    ),
    "local nosuchuser": (
        "N=1   R=1   A=0  QA=<T>",
        [("Y/I/100004", 0, "frank@example.com", 111)],
    ),
    "local postmaster": (
        "N=1   R=1   A=0  QA=<T>",
        [("Y/I/100004", 0, "frank@example.com", 153)],
    ),
    "smtp-etrn etrn.example.com": (
        "N=1   R=1   A=0  QA=<T>",
        [("Y/J/100005", 0, "heidi@example.com", 111)],
    ),
}


def test_timing_config_reports_are_deterministic(daemons: Daemons) -> None:
    d = daemons.timing
    short, threads, threads2, snmp = (
        mask_volatile(r)
        for r in d.query(
            "SHOW QUEUE SHORT", "SHOW QUEUE THREADS", "SHOW QUEUE THREADS2", "SHOW SNMP"
        )
    )
    assert threads == TIMING_GROUPS + TIMING_TRAILER
    groups = TIMING_GROUPS.splitlines(keepends=True)
    assert short == "".join(x for x in groups if not x.startswith(" ")) + TIMING_TRAILER
    assert threads2 == TIMING_THREADS2
    assert snmp == TIMING_TRAILER
    for key, (summary, rows) in TIMING_ROWS.items():
        (body,) = d.query(f"SHOW THREAD {key}")
        head, *got = body.splitlines()
        channel, host = key.split()
        assert mask_volatile(head) == f"#{channel}/{host}/0  {summary}"
        expected = []
        for spool, index, sender, offset in rows:
            # expiry = the message file's mtime + expiry=5d (from our clock, but exact)
            expiry = int((d.po.root / "queue" / spool).stat().st_mtime) + 5 * 86400
            expected.append(f"{spool}\t{index}\t{sender}\t{offset}\t{expiry}")
        assert [row.rsplit("\t", 5)[0] for row in got] == expected
        for row in got:  # the wakeup is a clock value
            assert re.fullmatch(r"1\d{9}\t0\t0\tthread\t", row.split("\t", 5)[5])

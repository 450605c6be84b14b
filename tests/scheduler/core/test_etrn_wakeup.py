"""Issue 12 item 9: the next wakeup after an ETRN-started run, replayed from a recording of
the real ZMailer 3.0.1 scheduler (``fixtures/etrn_wakeup/``, see its README).

ETRN zeroes the thread's wakeup (SHOW THREAD field 6 shows 0); when the run's agent
leaves the thread, ZMailer reschedules it from that zero: ``0 + r[i] * interval``, moved
forward by whole intervals past now, i.e. the next interval boundary after now (``W=728s``
for interval 3600 there, where ``now + r[i] * interval`` would be ``W=43200s``).
"""

from __future__ import annotations

from pathlib import Path

from tests.scheduler.core.playbook import Playbook

FIXTURE = Path(__file__).parent / "fixtures/etrn_wakeup/real-interval3600.txt"
EXPIRY = 5 * 86400

CONF = """\
*/*\tinterval=1m idlemax=4m expiry=5d expiry2=2d
\tretries="1 1 2 3 5 8 13 21 34" maxchannel=0 maxring=20 overfeed=150
smtp-etrn/*\tmaxchannel=199 maxring=20 interval=3600 retries="12" queueonly
\tcommand="smtp -c $channel"
smtp/*\tmaxchannel=199 maxring=50 command="smtp"
"""


def recorded_rows(section: str) -> dict[str, list[str]]:
    """SHOW THREAD rows of one ``== section`` of the recording, by thread header."""
    rows: dict[str, list[str]] = {}
    text = FIXTURE.read_text().split(f"== {section} ", 1)[1].split("\n== ", 1)[0]
    thread = ""
    for line in text.splitlines():
        if line.startswith("#"):
            thread = line[1:].split()[0]
        elif line.startswith("Y/"):
            rows[thread] = line.split("\t")
    return rows


def defer_all(pb: Playbook, proc: int, number: int) -> None:
    """What the real smtp TA wrote for a refused connection: ``deferall``, then
    ``#hungry`` twice (the first one is answered ``#idle``): the agent leaves the thread."""
    msg = pb.sched.message(number)
    assert msg is not None
    off = msg.vertices[0].offsets[0]
    pb.line(proc, f"{number}/{off}\t\tdeferall smtp; 500 (Connection refused)")
    pb.hungry(proc, 2)  # as recorded: "#hungry", "#idle" written, "#hungry"


def test_queueonly_thread_after_etrn_waits_for_the_next_boundary() -> None:
    before = recorded_rows("before")["smtp-etrn/etrn.example.com/0"]
    after = recorded_rows("3 s after")["smtp-etrn/etrn.example.com/0"]
    etrn_at, first_wakeup = int(after[6]), int(before[5])
    pb = Playbook(CONF, now=first_wakeup - 12)  # S36: loaded with W = now + r[0] s
    pb.load(
        "Y/J/100005",
        [("smtp-etrn", "etrn.example.com", "u@etrn.example.com")],
        mtime=int(after[4]) - EXPIRY,
    )
    th = pb.sched.find_thread("smtp-etrn", "etrn.example.com")
    assert th is not None
    assert th.wakeup == first_wakeup
    pb.at(etrn_at)
    n, cmds = pb.sched.etrn("etrn.example.com", pb.now)
    assert n == 1
    assert th.wakeup == 0
    (start,) = pb.starts(cmds)
    pb.started(start.proc)
    assert pb.jobs(pb.hungry(start.proc)) == ["Y/J/100005\tetrn.example.com"]
    defer_all(pb, start.proc, 100005)
    assert (th.attempts, th.wakeup) == (int(after[7]), int(after[5]))  # W=728s


def test_thread_etrned_during_its_backoff_waits_for_the_next_boundary() -> None:
    after = recorded_rows("3 s after")["smtp/example.net/0"]
    etrn_at = int(after[6])
    pb = Playbook(CONF, now=etrn_at - 9)
    cmds = pb.load(
        "Y/F/100001",
        [("smtp", "example.net", "u@example.net")],
        mtime=int(after[4]) - EXPIRY,
    )
    (start,) = pb.starts(cmds)
    pb.started(start.proc)
    assert pb.jobs(pb.hungry(start.proc)) == ["Y/F/100001\texample.net"]
    defer_all(pb, start.proc, 100001)
    th = pb.sched.find_thread("smtp", "example.net")
    assert th is not None
    assert th.wakeup > etrn_at
    pb.at(etrn_at)
    n, cmds = pb.sched.etrn("example.net", pb.now)
    assert n == 1
    assert th.wakeup == 0
    assert pb.jobs(cmds) == ["Y/F/100001\texample.net"]  # the idle TA, reused
    defer_all(pb, start.proc, 100001)
    assert th.wakeup == int(after[5])  # W=8s: the next minute boundary

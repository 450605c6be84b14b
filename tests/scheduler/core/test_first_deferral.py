"""Issue 12: the first deferral of a brand-new thread, replayed from recordings of the real
ZMailer 3.0.1 scheduler (``fixtures/first_deferral/``, see its README).

A fresh thread's wakeup is 0. ZMailer reschedules from that zero: ``deferall`` (and an
agent leaving the thread) gives the next interval boundary; a per-recipient ``deferred``
goes through ``reschedule()``, whose S17 assignment lands 10 s after a boundary: ahead of
now early in the minute (run at :03, ``W=7s``), behind it later, where the reschedule
when the agent leaves moves it on to the next boundary + 10 s (run at :31); a second
``deferred`` of the same run adds the skew adjustment (-2 s: the next boundary + 8 s).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.scheduler.core.playbook import Playbook

FIXTURES = Path(__file__).parent / "fixtures/first_deferral"
EXPIRY = 3 * 86400

CONF = """\
*/*\tinterval=1m idlemax=4m expiry=3d expiry2=1d
\tretries="1 1 2 3 5 8 13 21 34" maxchannel=0 maxring=20 overfeed=150
smtpdown/*\tcommand="smtp -c $channel -p 9"
smtp/*\tcommand="smtp -p 25"
"""
THREADS = {  # thread -> (spool id, recipients, what the smtp TA wrote for each)
    ("smtp", "one.defer.example"): ("Y/F/100001", ["u"], "deferred"),
    ("smtp", "two.defer.example"): ("Y/G/100002", ["u", "v"], "deferred"),
    ("smtpdown", "x.down.example"): ("Y/H/100003", ["u"], "deferall"),
}


def recorded(name: str) -> dict[tuple[str, str], list[str]]:
    """The first SHOW THREAD row of each thread in a recording."""
    rows: dict[tuple[str, str], list[str]] = {}
    thread: tuple[str, str] | None = None
    for line in (FIXTURES / name).read_text().splitlines():
        if line.startswith("#"):
            ch, host, _ = line[1:].split()[0].split("/")
            thread = (ch, host)
        elif line.startswith("Y/") and thread is not None and thread not in rows:
            rows[thread] = line.split("\t")
    return rows


@pytest.mark.parametrize("name", ["real-p03.txt", "real-p31.txt"])
@pytest.mark.parametrize("thread", sorted(THREADS))
def test_fresh_thread_first_deferral_lands_where_zmailers_does(
    name: str, thread: tuple[str, str]
) -> None:
    row = recorded(name)[thread]
    run_at, wakeup, attempts = int(row[6]), int(row[5]), int(row[7])
    spool_id, users, status = THREADS[thread]
    ch, host = thread
    pb = Playbook(CONF, now=run_at)
    number = int(spool_id.rsplit("/", 1)[1])
    cmds = pb.load(
        spool_id,
        [(ch, host, f"{u}@{host}") for u in users],
        mtime=int(row[4]) - EXPIRY,
    )
    (start,) = pb.starts(cmds)
    pb.started(start.proc)
    assert pb.jobs(pb.hungry(start.proc)) == [f"{spool_id}\t{host}"]
    th = pb.sched.find_thread(ch, host)
    assert th is not None
    assert th.wakeup == 0  # fresh
    msg = pb.sched.message(number)
    assert msg is not None
    offsets = msg.vertices[0].offsets
    for off in offsets[: 1 if status == "deferall" else len(users)]:
        pb.line(start.proc, f"{number}/{off}\t\t{status} smtp; 450 busy")
    pb.hungry(start.proc, 2)  # "#hungry", "#idle" written, "#hungry": the TA leaves
    assert (th.attempts, th.wakeup) == (attempts, wakeup)


def test_a_thread_held_back_by_a_limit_counts_from_the_refusal() -> None:
    """ZMailer's thread_start() calls reschedule(vp, 0) when a limit refuses a TA: a
    thread never tried gets ``wakeup = now``, so its first deferral is no longer a
    zero-wakeup one (here: switched to by the TA of another thread, maxchannel=1)."""
    import random

    from scheduler.core import retry
    from tests.scheduler.core.playbook import START

    conf = CONF + 'lim/*\tmaxchannel=1 command="smtp"\n'
    pb = Playbook(conf, now=START + 7)
    pb.load("A/1", [("lim", "h1", "u@h1")])
    pb.load("A/2", [("lim", "h2", "u@h2")])
    (start,) = pb.starts(pb.commands)
    h2 = pb.sched.find_thread("lim", "h2")
    assert h2 is not None
    assert h2.pending == ">MaxChannel"
    assert h2.wakeup == START + 7
    pb.started(start.proc)
    pb.hungry(start.proc)
    m1, m2 = pb.sched.message(1), pb.sched.message(2)
    assert m1 is not None
    assert m2 is not None
    pb.line(start.proc, f"1/{m1.vertices[0].offsets[0]}\t\tok")
    assert pb.jobs(pb.hungry(start.proc)) == ["A/2\th2"]
    pb.at(START + 20)
    pb.line(start.proc, f"2/{m2.vertices[0].offsets[0]}\t\tdeferred busy")
    rng = random.Random(0)
    r = (1, 1, 2, 3, 5, 8, 13, 21, 34)
    w, ri, _ = retry.zm_reschedule(0, 0, START + 7, 60, 5, r, 0, 0, rng)
    w, ri, _ = retry.zm_reschedule(w, ri, START + 20, 60, 5, r, -1, 1, rng)
    assert h2.wakeup == w == START + 65  # the refusal time, skew -2, + r[0] intervals

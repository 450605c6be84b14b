"""The recorded queue: the 5 control files of the main run with the recorded scheduler.conf
give the groups, threads, N/R/A and SHOW THREAD rows of raw/11 and raw/15-17."""

from __future__ import annotations

import random
import re

import pytest

from scheduler.config.clauses import load_config
from scheduler.core.commands import Command, StartAgent, WriteAgent
from scheduler.core.events import AgentLine, AgentStarted, MessageLoaded, Tick
from scheduler.core.scheduler import Scheduler
from spool.controlfile import parse
from spool.counters import Counters
from tests.recordings import RECORDINGS

REF = RECORDINGS
START = 1795312204
EXPIRY = {  # SHOW THREAD field 5 of raw/15-17 (mtime + 5 days)
    "100001": 1795733402,
    "100002": 1795736877,
    "100003": 1795743602,
    "100004": 1795744112,
    "100005": 1795744157,
}
SEED = 7

pytestmark = pytest.mark.skipif(
    not REF.is_dir(), reason="reference recordings not available"
)


def recorded_files() -> list[tuple[str, bytes]]:
    text = (REF / "queue-data/main-run-control-files.txt").read_text()
    found = re.findall(
        r"^==== transport/(\d+) ====\n(.*?)(?=^==== |\Z)", text, re.S | re.M
    )
    return [(n, body.encode()) for n, body in found]


def written(cmds: list[Command]) -> list[bytes]:
    return [c.data for c in cmds if isinstance(c, WriteAgent)]


def rows(s: Scheduler, channel: str, host: str) -> list[tuple[object, ...]]:
    """SHOW THREAD rows (fields 1-5, 8, 10) plus whether field 7 (last feed) is set."""
    th = s.find_thread(channel, host)
    assert th is not None
    out: list[tuple[object, ...]] = []
    for v in th.vertices():
        for i, off in enumerate(v.offsets):
            out.append(
                (
                    v.path,
                    i,
                    v.sender,
                    off,
                    v.expiry,
                    v.lastfeed != 0,
                    v.attempts,
                    v.message,
                )
            )
    return out


@pytest.fixture
def sched() -> Scheduler:
    config = load_config(
        str(REF / "configs/scheduler.conf"), {"MAILSHARE": "/nonexistent"}
    )
    s = Scheduler(config, Counters.open(None), start_time=START, frozen=True,
                  rng=random.Random(SEED))  # fmt: skip
    for i, (n, data) in enumerate(recorded_files()):
        mtime = EXPIRY[n] - 5 * 86400
        ev = MessageLoaded(f"Y/{'FGHIJ'[i]}/{n}", parse(data), mtime, 0, float(mtime))
        assert s.handle(ev, START) == []
    return s


def test_loaded_structure(sched: Scheduler) -> None:
    s = sched
    assert [(g.clause_channel, g.clause_host, g.withhost) for g in s.groups()] == [
        ("smtp", "*", 0),
        ("local", "*", 0),
        ("smtp-etrn", "*", 0),
    ]
    assert [
        [(t.channel, t.host, t.jobs, t.rcpts) for t in g.threads()] for g in s.groups()
    ] == [
        [("smtp", "example.net", 2, 3), ("smtp", "example.org", 2, 2)],
        [("local", "nosuchuser", 1, 1), ("local", "postmaster", 1, 1)],
        [("smtp-etrn", "etrn.example.com", 1, 1)],
    ]
    assert [(g.maxring, g.overfeed, g.maxthr) for g in s.groups()] == [
        (50, 150, 1), (5, 150, 1), (20, 150, 1)
    ]  # fmt: skip
    assert (s.kids, s.idle, s.msgs, s.total_threads, s.total_vertices) == (
        0,
        0,
        5,
        5,
        7,
    )
    assert s.total_recipients == 8
    local = s.find_thread("local", "nosuchuser")
    etrn = s.find_thread("smtp-etrn", "etrn.example.com")
    assert local is not None
    assert etrn is not None
    assert (local.wakeup, etrn.wakeup) == (
        1795312205,
        1795312216,
    )  # raw/17 field 6 (S36)
    assert rows(s, "local", "nosuchuser") == [
        ("Y/I/100004", 0, "frank@example.com", 111, 1795744112, False, 0, None)
    ]
    assert rows(s, "smtp-etrn", "etrn.example.com") == [
        ("Y/J/100005", 0, "heidi@example.com", 111, 1795744157, False, 0, None)
    ]
    c = s.counters
    assert [c.get(f"SC.{n}") for n in ("ReceivedMessages", "TransmittedMessages",
            "StoredMessages-G", "ReceivedRecipients", "TransmittedRecipients",
            "StoredRecipients-G")] == [5, 0, 5, 8, 0, 8]  # fmt: skip


DIAG = (
    "smtp; 500 (connect to 127.0.0.1 [127.0.0.1|9|127.0.0.1|48553]: Connection refused)"
)


def test_after_the_first_run(sched: Scheduler) -> None:
    """Each smtp thread ran once (deferall, as the recorded smtp TA did) and went idle."""
    s = sched
    s.frozen = False  # like ZMailer's -S: load everything, then start
    now = START + 10  # the frozen start attempts are retried at the next tick
    cmds = s.handle(Tick(), now)
    starts = [c for c in cmds if isinstance(c, StartAgent)]
    assert [(c.channel, c.host) for c in starts] == [("smtp", "example.net"), ("smtp", "example.org")]  # fmt: skip
    net, org = (c.proc for c in starts)
    for proc in (
        org,
        net,
    ):  # org's TA goes idle first (thread ring: org, net in raw/11)
        s.handle(AgentStarted(proc, 1000 + proc), now)
        (job,) = [
            d.decode() for d in written(s.handle(AgentLine(proc, "#hungry"), now))
        ]
        path = job.split("\t")[0]
        number = path.rpartition("/")[2]
        msg = s.message(int(number))
        assert msg is not None
        th = s.proc(proc).thread  # type: ignore[union-attr]
        v = next(v for v in msg.vertices if v.thread is th)
        line = f"{number}/{v.offsets[0]}\t\tdeferall {DIAG}"
        assert s.handle(AgentLine(proc, line), now) == []
        assert written(s.handle(AgentLine(proc, "#hungry"), now)) == [b"#idle\n"]
        assert s.handle(AgentLine(proc, "#hungry"), now) == []
    smtp = next(iter(s.groups()))
    assert [(t.host, t.jobs, t.rcpts, t.attempts) for t in smtp.threads()] == [
        ("example.org", 2, 2, 1),
        ("example.net", 2, 3, 1),
    ]
    assert (smtp.thread_count, smtp.proc_count, smtp.idle_count) == (2, 2, 2)
    assert (s.kids, s.idle, s.msgs, s.total_threads, s.total_vertices) == (
        2,
        2,
        5,
        5,
        7,
    )
    assert all(t.wakeup > now for t in smtp.threads())
    assert rows(s, "smtp", "example.net") == [
        ("Y/F/100001", 0, "alice@example.com", 111, 1795733402, True, 1, DIAG),
        ("Y/G/100002", 0, "alice@example.com", 160, 1795736877, False, 1, DIAG),
        ("Y/G/100002", 1, "alice@example.com", 111, 1795736877, False, 1, DIAG),
    ]
    assert rows(s, "smtp", "example.org") == [
        ("Y/H/100003", 0, "frank@example.com", 111, 1795743602, True, 1, DIAG),
        ("Y/G/100002", 0, "alice@example.com", 208, 1795736877, False, 1, DIAG),
    ]
    net_thread = s.find_thread("smtp", "example.net")
    assert net_thread is not None
    assert net_thread.oldest_mtime == 1795733402 - 5 * 86400

"""``SHOW THREAD`` from cached bytes (mailq.server.reports.DetailCache).

The cache must never change a byte: after any sequence of scheduler events the body a
cache gives is the body formatted afresh from the live model, and a cache squeezed to a
small budget gives the same bytes too. The state machine is the decision core's own
(tests.scheduler.core.test_core_stateful), plus HOLD, RELEASE and RETRY, with the check
run after every step while the caches live on across steps.
"""

from __future__ import annotations

from hypothesis import settings, strategies as st
from hypothesis.stateful import invariant, rule

from mailq.protocol.connection import (
    EncodedBody,
    MultilineReply,
    ServerConnection,
    encode_body_lines,
)
from mailq.server.reports import DetailCache, thread_detail_report
from scheduler.core.model import Message
from tests.mailq.server import fakeview
from tests.scheduler.core.playbook import Playbook
from tests.scheduler.core.test_core_stateful import CHANNELS, CONF, HOSTS, CoreMachine


def fresh(view: object, channel: str, host: str, now: int) -> bytes:
    return encode_body_lines(list(thread_detail_report(view, channel, host, now)))  # type: ignore[arg-type]


def cached(
    cache: DetailCache, view: object, channel: str, host: str, now: int
) -> bytes:
    body = cache.report(view, channel, host, now)  # type: ignore[arg-type]
    return b"".join(body.encoded())


class CachedReports(CoreMachine):
    def __init__(self) -> None:
        super().__init__()
        self.big = DetailCache(1 << 30)  # compressed
        self.plain = DetailCache(1 << 30, plain_min=0, piece=64)  # kept as they are
        self.small = DetailCache(400, piece=50)  # eviction and refusal all the time
        self.auto = DetailCache()

    def _messages(self) -> list[Message]:
        return list(self.pb.sched.messages())

    @rule(data=st.data())
    def hold(self, data: st.DataObject) -> None:
        msgs = self._messages()
        if msgs:
            msg = data.draw(st.sampled_from(msgs))
            self._track(self.pb.sched.hold([msg], "test", "op", self.pb.now)[1])

    @rule()
    def release_all(self) -> None:
        held = [
            m for m in self._messages() if self.pb.sched.hold_info(m.number) is not None
        ]
        self._track(self.pb.sched.release(held, self.pb.now)[1])

    @rule(data=st.data(), later=st.sampled_from([0, 5, 90]))
    def retry(self, data: st.DataObject, later: int) -> None:
        msgs = self._messages()
        if msgs:
            msg = data.draw(st.sampled_from(msgs))
            self._track(self.pb.sched.retry([msg], self.pb.now + later, self.pb.now)[1])

    @invariant()
    def counts_match_a_recount(self) -> None:
        """Not here: held mail stays in the stored gauges (the core's own test)."""

    @invariant()
    def cached_bytes_are_fresh_bytes(self) -> None:
        s = self.pb.sched
        now = self.pb.now
        names = [(ch, h) for ch in CHANNELS for h in HOSTS]
        for channel, host in names:
            want = fresh(s, channel, host, now)
            for cache in (self.big, self.plain, self.small, self.auto):
                got = cached(cache, s, channel, host, now)
                assert got == want, (channel, host, got, want)
        assert self.small.size <= 400


CachedReports.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None
)
TestCachedReports = CachedReports.TestCase


def _queue_only(n: int) -> Playbook:
    pb = Playbook(CONF)
    for i in range(1, n + 1):
        pb.load(f"X/{i}", [("q", "a", f"u{i}@a"), ("q", "b", f"v{i}@b")])
    return pb


def test_a_second_report_is_served_from_the_cache_with_the_clock_spliced_in() -> None:
    pb = _queue_only(30)
    cache = DetailCache()
    first = cached(cache, pb.sched, "q", "a", pb.now)
    assert b"\tretry in " in first
    assert (cache.hits, cache.misses) == (0, 1)
    for later in (1, 7, 3600 * 5):  # the retry text changes with the clock
        now = pb.now + later
        assert cached(cache, pb.sched, "q", "a", now) == fresh(pb.sched, "q", "a", now)
    assert cache.misses == 2  # past the wakeup field 9 is no longer the retry text
    assert cache.hits == 2


def test_an_event_on_a_vertex_invalidates_its_thread_only() -> None:
    pb = _queue_only(5)
    s = pb.sched
    cache = DetailCache()
    cached(cache, s, "q", "a", pb.now)
    cached(cache, s, "q", "b", pb.now)
    thread = s.find_thread("q", "a")
    assert thread is not None
    vertex = next(iter(thread.vertices()))
    vertex.message = "450 try again"
    assert cached(cache, s, "q", "a", pb.now) == fresh(s, "q", "a", pb.now)
    assert b"450 try again" in cached(cache, s, "q", "a", pb.now)
    cached(cache, s, "q", "b", pb.now)
    assert (cache.hits, cache.misses) == (2, 3)


def test_a_field_holding_a_nul_is_formatted_afresh() -> None:
    pb = Playbook(CONF)
    pb.load("X/1", [("q", "a", "u@a")])
    thread = pb.sched.find_thread("q", "a")
    assert thread is not None
    next(iter(thread.vertices())).message = "odd\x00text"
    cache = DetailCache()
    for _ in range(2):
        got = cached(cache, pb.sched, "q", "a", pb.now)
        assert got == fresh(pb.sched, "q", "a", pb.now)
        assert b"odd\x00text" in got


def test_a_thread_too_big_for_the_budget_is_streamed_and_not_kept() -> None:
    pb = _queue_only(40)
    cache = DetailCache(40)
    body = cache.report(pb.sched, "q", "a", pb.now)
    pieces = list(body.encoded())
    assert b"".join(pieces) == fresh(pb.sched, "q", "a", pb.now)
    assert len(cache) == 0
    assert cache.size == 0


def test_small_newcomers_do_not_flush_a_big_entry() -> None:
    pb = Playbook(CONF)
    for i in range(1, 41):
        pb.load(f"X/{i}", [("q", "a", f"u{i}@a")])
    pb.load("X/99", [("q", "b", "u@b")])
    pb.load("X/98", [("q", "c", "u@c")])
    cache = DetailCache(40 * 60)  # room for the big thread and not much more
    cached(cache, pb.sched, "q", "a", pb.now)
    assert len(cache) == 1
    cached(cache, pb.sched, "q", "b", pb.now)
    cached(cache, pb.sched, "q", "c", pb.now)
    cached(cache, pb.sched, "q", "a", pb.now)
    assert cache.hits >= 1  # the big one stayed


def test_fake_threads_without_a_revision_are_never_cached() -> None:
    queue = fakeview.main_run()
    cache = DetailCache()
    now = fakeview.START + 14
    for thread in queue.all_threads():
        want = fresh(queue, thread.channel, thread.host, now)
        for _ in range(2):
            assert cached(cache, queue, thread.channel, thread.host, now) == want
    assert len(cache) == 0


def test_the_connection_sends_an_encoded_body_as_it_sends_lines() -> None:
    pb = _queue_only(3)
    body = DetailCache().report(pb.sched, "q", "a", pb.now)
    assert isinstance(body, EncodedBody)
    conn = ServerConnection("c")
    conn.state = conn.state.__class__.READY
    sent = conn.send(MultilineReply(body))
    plain = ServerConnection("c")
    plain.state = plain.state.__class__.READY
    assert sent == plain.send(MultilineReply(list(body)))
    assert sent.startswith(b"+OK until LF.LF\n#q/a/0  N=3   R=3 ")
    assert sent.endswith(b"\n.\n")


def test_big_rows_are_kept_plain_and_small_ones_compressed() -> None:
    pb = _queue_only(40)
    s = pb.sched
    cache = DetailCache(1 << 20, plain_min=1000, piece=100)
    for now in (pb.now, pb.now - 5):  # retry text spliced into the pieces
        for host in ("a", "b"):
            assert cached(cache, s, "q", host, now) == fresh(s, "q", host, now)
    small = DetailCache(1 << 20, plain_min=1 << 20, piece=100)
    for now in (pb.now, pb.now - 5):
        assert cached(small, s, "q", "a", now) == fresh(s, "q", "a", now)
    assert small.size * 4 < cache.size // 2  # two plain entries vs one compressed
    assert (cache.hits, small.hits) == (2, 1)

"""The pure metric builders over fake views: states, the bounded destination label set
(the oldest and the busiest, the rest as ``other``; nothing lost in the sums), the
counter families, and the exposition parsed by the tests' strict parser."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from mailq.server.metrics import (
    ThreadSummary,
    counter_families,
    queue_families,
    render,
    summarize,
)
from tests.mailq.server.fakeview import (
    FakeCounters,
    FakeGroup,
    FakeQueue,
    FakeThread,
    FakeVertex,
)
from tests.promtext import parse

NOW = 1_700_000_000


def thread(
    channel: str, host: str, rcpts: int, age: int, *, wakeup: int = 0, kids: int = 0
) -> FakeThread:
    v = FakeVertex("Q/1", "s@x", list(range(rcpts)), 0, mtime=NOW - age)
    return FakeThread(channel, host, wakeup, thrkids=kids, vertex_list=[v])


def queue(*threads: FakeThread) -> FakeQueue:
    groups: dict[str, FakeGroup] = {}
    for t in threads:
        groups.setdefault(t.channel, FakeGroup(t.channel)).thread_list.append(t)
    return FakeQueue(list(groups.values()), FakeCounters(), kids=3, idle=1)


def test_states_and_ages() -> None:
    view = queue(
        thread("smtp", "a.example", 3, 100, kids=1),
        thread("smtp", "b.example", 2, 50, wakeup=NOW + 60),
        thread("smtp", "c.example", 1, 10),
        thread("local", "x", 4, 5),
    )
    fams = parse(render(queue_families(view, NOW)))
    rcpts = fams["zmailer_scheduler_queued_recipients"]
    assert rcpts.value(channel="smtp", state="active") == 3
    assert rcpts.value(channel="smtp", state="deferred") == 2
    assert rcpts.value(channel="smtp", state="ready") == 1
    assert rcpts.value(channel="local", state="ready") == 4
    assert fams["zmailer_scheduler_oldest_message_age_seconds"].value() == 100
    ages = fams["zmailer_scheduler_destination_oldest_age_seconds"]
    assert ages.value(channel="smtp", host="b.example") == 50
    assert ages.value(channel="other", host="other") == 0
    agents = fams["zmailer_scheduler_transport_agents"]
    assert agents.value(state="running") == 2
    assert agents.value(state="idle") == 1


def test_empty_queue() -> None:
    fams = parse(render(queue_families(queue(), NOW)))
    assert fams["zmailer_scheduler_oldest_message_age_seconds"].value() == 0
    assert fams["zmailer_scheduler_destination_recipients"].samples == {
        (("channel", "other"), ("host", "other")): 0
    }


@settings(max_examples=60)
@given(
    st.lists(
        st.tuples(st.integers(1, 50), st.integers(0, 10_000)), min_size=0, max_size=60
    ),
    st.integers(1, 5),
)
def test_destinations_are_bounded_and_sum_up(
    rows: list[tuple[int, int]], top: int
) -> None:
    view = queue(*(thread("smtp", f"h{i}", r, a) for i, (r, a) in enumerate(rows)))
    fams = parse(render(queue_families(view, NOW, top)))
    count = fams["zmailer_scheduler_destination_recipients"].samples
    ages = fams["zmailer_scheduler_destination_oldest_age_seconds"].samples
    assert len(count) <= 2 * top + 1
    assert count.keys() == ages.keys()
    assert sum(count.values()) == sum(r for r, _ in rows)
    if rows:
        assert max(ages.values()) == max(a for _, a in rows)
    by_age = sorted(rows, key=lambda r: -r[1])
    shown = {dict(k)["host"] for k in count} - {"other"}
    # the oldest ages are all labelled (ties may pick either thread)
    shown_ages = sorted(ages[k] for k in ages if dict(k)["host"] != "other")
    for _, a in by_age[:top]:
        assert a in shown_ages or a <= ages[(("channel", "other"), ("host", "other"))]
    assert len(shown) <= 2 * top


def test_sliced_summary_equals_one_pass() -> None:
    threads = [thread("smtp", f"h{i}", i % 7 + 1, i * 13 % 1000) for i in range(100)]
    view = queue(*threads)
    sliced = ThreadSummary(NOW, 3)
    for i in range(0, 100, 9):
        sliced.add(threads[i : i + 9])
    one = render(queue_families(view, NOW, 3, summarize(view, NOW, 3)))
    assert render(queue_families(view, NOW, 3, sliced)) == one


def test_counter_families_are_counters() -> None:
    view = queue()
    view.counters = FakeCounters({"SC.MQ2AuthRej": 4, "SC.MQ2Parallel-G": 2})
    fams = parse(render(counter_families(view.counters)))
    assert fams["zmailer_scheduler_mailq_auth_failures_total"].value() == 4
    assert fams["zmailer_scheduler_mailq_sessions"].value() == 2

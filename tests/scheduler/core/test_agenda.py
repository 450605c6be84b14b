"""The agenda heap: every due item comes out, stale entries never do (S15 fixed)."""

from __future__ import annotations

from hypothesis import given, strategies as st

from scheduler.core.agenda import Agenda


class Item:
    def __init__(self, name: str) -> None:
        self.name = name
        self.agenda_seq = 0


def test_every_due_item_even_behind_a_far_future_one() -> None:
    a: Agenda[Item] = Agenda()
    far, x, y = Item("far"), Item("x"), Item("y")
    a.schedule(far, 10_000)
    a.schedule(x, 30)
    a.schedule(y, 20)
    assert a.next_time() == 20
    assert [i.name for i in a.pop_due(100)] == ["y", "x"]
    assert a.next_time() == 10_000


def test_reschedule_and_cancel_forget_old_entries() -> None:
    a: Agenda[Item] = Agenda()
    x, y = Item("x"), Item("y")
    a.schedule(x, 10)
    a.schedule(x, 50)
    a.schedule(y, 20)
    Agenda.cancel(y)
    assert a.pop_due(30) == []
    assert a.next_time() == 50
    assert [i.name for i in a.pop_due(50)] == ["x"]
    assert a.next_time() is None
    a.compact()
    assert len(a) == 0


@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 100)), max_size=60),
    st.integers(0, 100),
)
def test_pop_due_matches_a_model(ops: list[tuple[int, int]], now: int) -> None:
    items = [Item(str(i)) for i in range(6)]
    model: dict[int, int] = {}
    a: Agenda[Item] = Agenda()
    for idx, when in ops:
        a.schedule(items[idx], when)
        model[idx] = when
    due = a.pop_due(now)
    assert sorted(int(i.name) for i in due) == sorted(
        k for k, w in model.items() if w <= now
    )
    left = [w for w in model.values() if w > now]
    assert a.next_time() == (min(left) if left else None)

"""Retry times: the literal ZMailer algorithm against the observed trace (SCHED-REF 4.6.5),
and the fixed algorithm of 4.6.6."""

from __future__ import annotations

import random

import pytest

from scheduler.core import retry
from tests.scheduler.core.playbook import Playbook

R6 = (1, 1, 2, 3, 5, 8)


def zm_run(wakeup: int, ri: int, now: int, skew: int, retries: tuple[int, ...] = R6,
           reports: int = 1) -> tuple[int, int]:  # fmt: skip
    """One TA run of ``reports`` deferrals at ``now``, then the end-of-run reschedule."""
    rng = random.Random(0)
    for _ in range(reports):
        wakeup, ri, _pre = retry.zm_reschedule(
            wakeup, ri, now, 20, skew, retries, -1, 1, rng
        )
    wakeup, ri, _adv = retry.zm_thread_reschedule(wakeup, ri, now, 20, retries, rng)
    return wakeup, ri


def test_zmailer_trace_single_recipient_skew_1() -> None:
    assert zm_run(0, 0, 644, 1) == (650, 1)
    assert zm_run(650, 1, 655, 1) == (660, 2)
    assert zm_run(660, 2, 675, 1) == (700, 3)
    assert zm_run(700, 3, 715, 1) == (760, 4)


def test_zmailer_trace_two_recipients_skew_5() -> None:
    w, ri = zm_run(0, 0, 644, 5, reports=2)
    assert w == 650
    w, ri = zm_run(w, ri, 655, 5, reports=2)
    assert w == 668
    w, ri = zm_run(w, ri, 675, 5, reports=2)
    assert w == 706
    w, ri = zm_run(w, ri, 715, 5, reports=2)
    assert w == 764


def test_zmailer_trace_s17_bug_path_and_s18() -> None:
    rng = random.Random(0)
    w, ri, pre = retry.zm_reschedule(686, 1, 715, 20, 5, (1,), -1, 1, rng)
    assert (w, pre) == (30, False)  # S17: a tiny value
    w, ri, adv = retry.zm_thread_reschedule(w, ri, 715, 20, (1,), rng)
    assert (w, adv) == (730, True)


def test_zmailer_limit_hit_then_deferral() -> None:
    rng = random.Random(0)
    w, ri, _ = retry.zm_reschedule(0, 0, 644, 20, 5, R6, 0, 0, rng)
    assert (w, ri) == (644, 0)  # never attempted: now
    w, ri, _ = retry.zm_reschedule(w, ri, 644, 20, 5, R6, -1, 1, rng)
    assert w == 663


def test_zmailer_etrn_run_index_jumps_by_two() -> None:
    w, ri = zm_run(0, 0, 870, 5)
    assert (w, ri) == (890, 3)


def test_zmailer_prescheduled_and_no_retries_change_nothing() -> None:
    rng = random.Random(0)
    assert retry.zm_reschedule(900, 2, 800, 20, 5, R6, -1, 1, rng) == (900, 2, True)
    assert retry.zm_reschedule(100, 0, 800, 20, 5, (), -1, 1, rng) == (100, 0, True)
    assert retry.zm_thread_reschedule(100, 0, 800, 20, (), rng) == (100, 0, False)


@pytest.mark.parametrize(
    ("wakeup", "k_interval", "skew", "adj"),
    [
        (650, 20, 1, -10),
        (650, 20, 5, -2),
        (668, 20, 5, -2),
        (1003, 60, 5, 9),
        (1043, 60, 5, -5),
        (660, 20, 5, 0),
    ],
)
def test_skew_adjust(wakeup: int, k_interval: int, skew: int, adj: int) -> None:
    assert retry.skew_adjust(wakeup, k_interval, skew) == adj


def test_c_division_truncates_toward_zero() -> None:
    assert retry.c_div(-7, 2) == -3
    assert retry.c_div(7, -2) == -3
    assert retry.c_div(7, 2) == 3


def test_fixed_first_retry_is_measured_from_the_attempt() -> None:
    rng = random.Random(0)
    assert retry.fixed_reschedule(0, 0, 1003, 60, 5, (1, 1, 2), rng) == (1072, 1)
    # the next deferral of the same run finds the wakeup in the future: unchanged
    assert retry.fixed_reschedule(1072, 1, 1004, 60, 5, (1, 1, 2), rng) == (1072, 1)


def test_fixed_follows_the_series_from_the_previous_wakeup() -> None:
    rng = random.Random(0)
    assert retry.fixed_reschedule(1072, 1, 1075, 60, 5, (1, 1, 2), rng) == (1143, 2)
    assert retry.fixed_reschedule(1143, 2, 1150, 60, 5, (1, 1, 2), rng) == (
        1143 - 1 + 120,
        3,
    )


def test_fixed_overdue_wakeup_moves_to_the_first_boundary_after_now() -> None:
    rng = random.Random(0)
    assert retry.fixed_reschedule(100, 0, 10000, 60, 1, (1,), rng) == (10040, 1)


def test_fixed_random_restart_stays_inside_the_list() -> None:
    rng = random.Random(5)
    seen = set()
    for _ in range(50):
        _w, ri = retry.fixed_reschedule(1000, 9, 1000, 60, 5, (1, 2, 3), rng)
        seen.add(ri)
    assert seen == {1, 2, 3}
    assert retry.fixed_reschedule(500, 0, 1000, 60, 5, (), rng) == (500, 0)


CONF = """\
*/*\texpiry=5d
test5/*\tinterval=20 retries="1 1 2 3 5 8" skew=1 command="testta"
"""


def test_core_in_zmailer_mode_reproduces_the_trace() -> None:
    pb = Playbook(CONF, now=644, retry_mode="zmailer")
    (start,) = pb.starts(pb.load("A/1", [("test5", "hostb", "u@b")]))
    pb.started(start.proc)
    pb.hungry(start.proc)
    off = pb.sched.message(1).vertices[0].offsets[0]  # type: ignore[union-attr]
    pb.line(start.proc, f"1/{off}\t\tdeferred")
    pb.hungry(start.proc, 2)
    th = pb.sched.find_thread("test5", "hostb")
    assert th is not None
    assert th.wakeup == 650
    pb.at(655)
    pb.tick()
    pb.line(start.proc, f"1/{off}\t\tdeferred")
    pb.hungry(start.proc, 2)
    assert th.wakeup == 660
    assert th.attempts == 2


@pytest.mark.parametrize(
    ("now", "interval", "retries", "expected"),
    [
        (1796582869, 3600, (12,), (1796583600, 2)),  # recorded: W=728s
        (1796582869, 60, (1, 1, 2), (1796582880, 2)),  # recorded: W=11s at the ETRN
        (1796583600, 3600, (12,), (1796587200, 2)),  # on a boundary: the next one
        (100, 60, (5,), (300, 2)),  # r[i]*interval still ahead: kept
    ],
)
def test_thread_advance_from_zero_is_the_next_boundary(
    now: int, interval: int, retries: tuple[int, ...], expected: tuple[int, int]
) -> None:
    """Issue 12 item 9: the first reschedule after an ETRN (or of a fresh thread)."""
    rng = random.Random(0)
    assert retry.thread_advance(0, 0, now, interval, retries, rng) == expected


@pytest.mark.parametrize(
    ("wakeup", "now", "expected"),
    [
        (0, 1796586792, (1796586840, 3)),  # a fresh thread: the next boundary
        (1796586790, 1796586792, (1796586850, 3)),  # recorded: the next boundary + 10
        (1796586850, 1796586848, (1796586850, 1)),  # ahead: kept
        (
            1796586780,
            1796586840,
            (1796586840, 3),
        ),  # exactly now: not moved (as ZMailer)
        (1796586787, 1796586900, (1796586907, 3)),  # no skew: the offset is kept
        (1796586840, 1796586901, (1796586960, 3)),  # S18 kept: r[1], index 1 -> 3
    ],
)
def test_thread_advance_is_zmailers_thread_reschedule(
    wakeup: int, now: int, expected: tuple[int, int]
) -> None:
    got = retry.thread_advance(wakeup, 1, now, 60, R6, random.Random(0))
    assert got == expected
    zm = retry.zm_thread_reschedule(wakeup, 1, now, 60, R6, random.Random(0))
    assert zm[:2] == expected


@pytest.mark.parametrize(
    ("now", "retries", "expected"),
    [
        (1796586903, (1, 1, 2), (1796586910, 1)),  # recorded at :03: W=7s
        (1796586792, (1, 1, 2), (1796586790, 1)),  # recorded at :12: behind now
        (1796586840, (1, 1, 2), (1796586850, 1)),  # on the boundary: 10 s ahead
        (1796586792, (0, 1), (1796586850, 1)),  # r[0] = 0: the next boundary + 10
        (1796586792, (3,), (1796586670, 1)),  # r[0] = 3: two boundaries back + 10
    ],
)
def test_zero_deferred_is_zmailers_reschedule_from_a_zero_wakeup(
    now: int, retries: tuple[int, ...], expected: tuple[int, int]
) -> None:
    """Work item 1 of issue 12: a per-recipient ``deferred`` on a fresh thread, as
    ZMailer's reschedule() (S17 included: it lands 10 s after a boundary)."""
    assert retry.zero_deferred(0, now, 60, retries, random.Random(0)) == expected
    zm = retry.zm_reschedule(0, 0, now, 60, 5, retries, -1, 1, random.Random(0))
    assert zm[:2] == expected

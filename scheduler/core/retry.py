"""Retry times as pure functions (SCHED-REF 4.6).

Two algorithms:

* ``fixed`` (default): ZMailer's arithmetic where it gives a time ahead of now, with S17
  fixed (SCHED-REF 4.6.6; S18 is kept since issue 12). The first deferral of a run decides the next wakeup;
  later deferrals of the same run find the wakeup in the future and change nothing. A
  per-recipient deferral adds the skew adjustment (``reschedule()``), an agent leaving the
  thread or ``deferall`` does not (``thread_reschedule()``); from a zero wakeup (a fresh
  thread, or after ETRN) both land where ZMailer's do (:func:`thread_advance`,
  :func:`zero_deferred`). The random restart at the end of the ``retries`` list is kept.
* ``zmailer``: the literal algorithm of SCHED-REF Appendix A, bugs S17 and S18 included, for
  sites that want ``W=`` values identical to ZMailer's.

Every function takes and returns plain integers; the random generator is injected.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

__all__ = [
    "c_div",
    "fixed_reschedule",
    "pick_index",
    "skew_adjust",
    "thread_advance",
    "zero_deferred",
    "zm_reschedule",
    "zm_thread_reschedule",
]


def c_div(a: int, b: int) -> int:
    """C integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def skew_adjust(wakeup: int, interval: int, skew: int) -> int:
    """Pull a wakeup toward a multiple of ``interval`` (SCHED-REF 4.6.2)."""
    k = wakeup % interval
    step = c_div(k + skew - 1, skew)
    return -step if k <= interval // 2 else step


def pick_index(retryindex: int, n: int, rng: random.Random) -> int:
    """The random restart: past the end of ``retries``, jump to a random spot."""
    if retryindex < n:
        return retryindex
    return rng.randint(0, n - 1) if n > 1 else 0


def _advance(
    wakeup: int,
    now: int,
    interval: int,
    skew: int,
    retries: Sequence[int],
    retryindex: int,
    rng: random.Random,
) -> tuple[int, int]:
    w = now if wakeup <= 0 else wakeup
    i = pick_index(retryindex, len(retries), rng)
    w += skew_adjust(w, interval, skew) + retries[i] * interval
    if w <= now:
        w += ((now - w) // interval + 1) * interval
    return w, i + 1


def fixed_reschedule(
    wakeup: int,
    retryindex: int,
    now: int,
    interval: int,
    skew: int,
    retries: Sequence[int],
    rng: random.Random,
) -> tuple[int, int]:
    """A deferral was reported: return ``(wakeup, retryindex)`` (SCHED-REF 4.6.6).

    A wakeup already in the future is kept ("the first deferral of a run decides"; an
    arrival during backoff does not move the schedule, 4.10). Without a ``retries`` list
    the wakeup is not advanced (the caller retries at the next tick).
    """
    if wakeup > now or not retries:
        return wakeup, retryindex
    return _advance(wakeup, now, interval, skew, retries, retryindex, rng)


def thread_advance(
    wakeup: int,
    retryindex: int,
    now: int,
    interval: int,
    retries: Sequence[int],
    rng: random.Random,
) -> tuple[int, int]:
    """The reschedule when an agent leaves a thread (or reports ``deferall``), as
    ZMailer's ``thread_reschedule()``: a wakeup in the future is kept; else
    ``wakeup + r[i] * interval`` (no skew), moved forward by whole intervals past now.
    The index advances by two, as ZMailer's (S18: clients see the ``W=`` it gives, so it
    is kept; the retries used are ``r[0], r[2], r[4], ...``): the same arithmetic as
    :func:`zm_thread_reschedule`, whose ``advanced`` flag the fixed mode does not use.

    From a zero wakeup (a fresh thread, or one an ETRN zeroed) this is the next interval
    boundary after now, not ``now + r[i] * interval`` (issue 12 item 9 and work item 1).
    """
    w, i, _ = zm_thread_reschedule(wakeup, retryindex, now, interval, retries, rng)
    return w, i


def zero_deferred(
    retryindex: int,
    now: int,
    interval: int,
    retries: Sequence[int],
    rng: random.Random,
) -> tuple[int, int]:
    """A per-recipient ``deferred`` on a thread whose wakeup is zero (fresh, or an ETRN
    zeroed it), as ZMailer's ``reschedule()`` computes it: ``r[i] * interval`` (the skew
    of 0 is 0), and since that lies in the past, S17's assignment gives
    ``((now - w) // interval + 1) * interval + 10``: 10 s after the interval boundary
    ``r[i] - 1`` intervals before the next one. With ``r[i] == 1`` that is 10 s after the
    current minute's boundary: ahead of now early in the interval (the thread retries
    then), behind it later (the reschedule when the agent leaves then moves it on by
    whole intervals: the next boundary + 10 s). Recorded from the real scheduler,
    ``tests/scheduler/core/fixtures/first_deferral/``.
    """
    if not retries:
        return 0, retryindex
    i = pick_index(retryindex, len(retries), rng)
    w = retries[i] * interval
    if w < now:
        w = ((now - w) // interval + 1) * interval + 10
    return w, i + 1


def zm_reschedule(
    wakeup: int,
    retryindex: int,
    now: int,
    interval: int,
    skew: int,
    retries: Sequence[int],
    factor: int,
    attempts: int,
    rng: random.Random,
) -> tuple[int, int, bool]:
    """ZMailer's ``reschedule()`` verbatim (Appendix A), S17 included.

    ``factor`` is -1 for a deferral, 0 for a resource-limit hit. Returns
    ``(wakeup, retryindex, prescheduled)``; when ``prescheduled`` nothing was changed.
    """
    n = len(retries)
    if wakeup > now or n <= 0:
        return wakeup, retryindex, True
    w = wakeup
    if factor in (-1, -2) and attempts:
        retryindex = pick_index(retryindex, n, rng)
        w += skew_adjust(w, interval, skew) + retries[retryindex] * interval
        retryindex += 1
    elif factor < -2:
        w = -factor
    else:
        w += factor * interval
    if attempts == 0:
        w = now
    if w < now:  # S17: "=" where "+=" was meant
        w = ((now - w) // interval + 1) * interval + 10
    return w, retryindex, False


def zm_thread_reschedule(
    wakeup: int,
    retryindex: int,
    now: int,
    interval: int,
    retries: Sequence[int],
    rng: random.Random,
) -> tuple[int, int, bool]:
    """ZMailer's ``thread_reschedule()`` verbatim (S18: the index advances by two).

    Returns ``(wakeup, retryindex, advanced)``; the caller runs the expiry check only
    when ``advanced``.
    """
    n = len(retries)
    if wakeup > now or n <= 0:
        return wakeup, retryindex, False
    retryindex = pick_index(retryindex, n, rng)
    w = wakeup + retries[retryindex] * interval
    retryindex += 2
    if w < now:
        w += ((now - w) // interval + 1) * interval
    return w, retryindex, True

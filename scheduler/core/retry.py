"""Retry times as pure functions (SCHED-REF 4.6).

Two algorithms:

* ``fixed`` (default): the evident intent of ZMailer's code, SCHED-REF 4.6.6. The first
  deferral of a run decides the next wakeup; later deferrals of the same run find the wakeup
  in the future and change nothing. The skew adjustment and the random restart at the end of
  the ``retries`` list are kept.
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
    "from_zero",
    "pick_index",
    "skew_adjust",
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


def from_zero(
    retryindex: int,
    now: int,
    interval: int,
    retries: Sequence[int],
    rng: random.Random,
) -> tuple[int, int]:
    """The first reschedule after an ETRN, which zeroed the wakeup (issue 12 item 9).

    As ZMailer's ``thread_reschedule()`` from that zero: ``0 + r[i] * interval``, moved
    forward by whole intervals past now, i.e. the next multiple of ``interval`` after
    now (not ``now + r[i] * interval``). The index advances by one (S18 stays fixed).
    """
    if not retries:
        return 0, retryindex
    i = pick_index(retryindex, len(retries), rng)
    w = retries[i] * interval
    if w < now:
        w += ((now - w) // interval + 1) * interval
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

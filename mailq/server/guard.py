"""Per-address defences of the MAILQ v2 server: an AUTH failure budget and log limits.

* :class:`AuthThrottle`: each peer address may fail AUTH ``free`` times; after that every
  AUTH from it (on any connection) waits its turn, ``delay`` seconds apart, doubling per
  further failure up to ``max_delay``; no single AUTH waits longer than ``max_delay``,
  so an address's guesses per second are bounded by its open sessions / ``max_delay``
  (the session limits bound those). The count is forgotten ``forget`` seconds after the last
  failure. It is logged once when throttling starts and once when it ends (with the
  number of failures), never per try.
* :class:`PeerLogLimiter`: a logging filter that lets each peer address cause
  ``burst`` log lines at once and ``rate`` per second afterwards; what it drops is
  counted and reported in one summary line. The peer of a record is the session's, kept
  in a context variable that each session task sets (:func:`peer_context`).

Both are pure bookkeeping over a clock passed in; nothing here sleeps.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "AuthThrottle",
    "PeerLogLimiter",
    "current_peer",
    "peer_context",
]

logger = logging.getLogger(__name__)

_MAX_PEERS = 4096  # bookkeeping per address is bounded: the oldest entries go first

_PEER: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "mailq_peer", default=None
)


def peer_context(key: str) -> None:
    """Tag every log record of the current task (a session) with this peer address."""
    _PEER.set(key)


def current_peer() -> str | None:
    return _PEER.get()


@dataclass(slots=True)
class _Failures:
    count: int = 0
    last: float = 0.0
    next_turn: float = 0.0
    throttled: bool = False


class AuthThrottle:
    """The AUTH failure budget of every peer address."""

    def __init__(
        self,
        free: int,
        delay: float,
        max_delay: float,
        forget: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free = free
        self.delay = delay
        self.max_delay = max_delay
        self.forget = forget
        self.clock = clock
        self._peers: dict[str, _Failures] = {}

    def _entry(self, key: str, now: float) -> _Failures | None:
        entry = self._peers.get(key)
        if entry is not None and now - entry.last > self.forget:
            if entry.throttled:
                logger.warning(
                    "AUTH throttle for %s ended: %d failed AUTHs in the burst",
                    key,
                    entry.count,
                )
            del self._peers[key]
            return None
        return entry

    def step(self, key: str) -> float:
        """The spacing between AUTH turns for ``key`` now (0: not throttled)."""
        entry = self._entry(key, self.clock())
        if entry is None or entry.count < self.free:
            return 0.0
        return float(min(self.max_delay, self.delay * 2.0 ** (entry.count - self.free)))

    def wait_before_auth(self, key: str) -> float:
        """Seconds this AUTH must wait for its turn (reserves the turn).

        Turns are ``step`` apart; no AUTH waits longer than ``max_delay`` (so
        connections from the address cannot queue one another out for ever), which
        bounds the guesses per second of an address by its open sessions / max_delay.
        """
        now = self.clock()
        step = self.step(key)
        if step <= 0:
            return 0.0
        entry = self._peers[key]
        wait = min(max(now, entry.next_turn) - now, self.max_delay)
        entry.next_turn = now + wait + step
        return wait

    def failed(self, key: str) -> None:
        now = self.clock()
        entry = self._entry(key, now)
        if entry is None:
            if len(self._peers) >= _MAX_PEERS:
                self._peers.pop(next(iter(self._peers)))
            entry = self._peers[key] = _Failures()
        entry.count += 1
        entry.last = now
        if entry.count >= self.free and not entry.throttled:
            entry.throttled = True
            logger.warning(
                "AUTH throttle for %s: %d failed AUTHs; each further AUTH waits "
                "%.2g s or more (logged once per burst)",
                key,
                entry.count,
                self.step(key),
            )

    def failures(self, key: str) -> int:
        entry = self._entry(key, self.clock())
        return 0 if entry is None else entry.count


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float
    dropped: int = 0


class PeerLogLimiter(logging.Filter):
    """Per-peer token bucket over log records (records without a peer always pass)."""

    def __init__(
        self, burst: int, rate: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.burst = burst
        self.rate = rate
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self.dropped_total = 0

    def filter(self, record: logging.LogRecord) -> bool:
        key = _PEER.get()
        if key is None or record.levelno >= logging.ERROR:
            return True
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= _MAX_PEERS:
                self._flush_oldest()
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
        bucket.tokens = min(
            float(self.burst), bucket.tokens + (now - bucket.stamp) * self.rate
        )
        bucket.stamp = now
        if bucket.tokens < 1.0:
            bucket.dropped += 1
            self.dropped_total += 1
            return False
        bucket.tokens -= 1.0
        if bucket.dropped:
            self._summary(key, bucket)
        return True

    def flush(self, key: str) -> None:
        """Report what was dropped for ``key`` (a session of it ended)."""
        bucket = self._buckets.get(key)
        if bucket is not None and bucket.dropped:
            self._summary(key, bucket)

    def _summary(self, key: str, bucket: _Bucket) -> None:
        dropped, bucket.dropped = bucket.dropped, 0
        token = _PEER.set(None)  # the summary itself is never limited
        try:
            logger.warning(
                "%s: %d log line(s) about this peer suppressed (rate limit)",
                key,
                dropped,
            )
        finally:
            _PEER.reset(token)

    def _flush_oldest(self) -> None:
        key = next(iter(self._buckets))
        self.flush(key)
        del self._buckets[key]

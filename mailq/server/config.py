"""``ServerConfig``: the MAILQ v2 server's settings (a frozen dataclass)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

__all__ = ["DEFAULT_LISTEN", "ServerConfig"]

DEFAULT_LISTEN: Final = "mailq"  # the services entry, else TCP port 174


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Settings of :class:`mailq.server.shell.MailqServer`.

    * ``authfile``: path of ``scheduler.auth`` (re-read on each connection and AUTH).
    * ``max_sessions``: ZMailer refuses a connection when more than this many are open,
      so ``max_sessions + 1`` are served (B11 keep); refused ones are closed silently.
    * ``lifetime``: total seconds a session may last (B12 fix: a real deadline).
    * ``max_line``: longest input line in bytes; longer closes the session (B10 fix).
    * ``max_auth_failures``: failed AUTHs before the session is closed (A6 fix).
    * ``auth_timeout``: seconds a session may stay unauthenticated before it is closed.
    * ``unix_mode``: mode of Unix listening sockets (ZMailer: 0666).
    * ``unix_owner``/``unix_group``: uid/gid given to Unix listening sockets (-1: the
      daemon's own).
    * ``reserved_sessions``: connections admitted past ``max_sessions + 1`` on probation:
      such a session stays only if its AUTH gives more rights than some open session
      has (that one is closed to make room); else it gets ``-Too many sessions``.
    * ``max_per_peer``: sessions one address (one uid on a Unix socket) may hold past
      which a newcomer from it is on probation the same way (0: no cap).
    * ``auth_free_failures``: failed AUTHs one address may make before each further AUTH
      from it waits ``auth_delay`` seconds, doubling per failure up to ``auth_max_delay``;
      the count is forgotten after ``auth_forget`` seconds without a failure.
    * ``log_burst``/``log_rate``: log lines one peer address may cause at once / per
      second afterwards; the rest are counted and summarised in one line.
    * ``graceful_timeout``: seconds ``close()`` lets running replies finish.
    * ``strict_counters``: ``SHOW COUNTERS`` needs the SNMP right (B7 option).
    * ``report_cache_bytes``: bytes of ``SHOW THREAD`` rows kept encoded for reuse
      (:class:`mailq.server.reports.DetailCache`); None: 8 per queued recipient, at
      least 1 MiB; 0: none kept.
    """

    authfile: str | os.PathLike[str]
    max_sessions: int = 20
    lifetime: float = 90.0
    max_line: int = 16384
    max_auth_failures: int = 3
    auth_timeout: float = 30.0
    unix_mode: int = 0o666
    unix_owner: int = -1
    unix_group: int = -1
    reserved_sessions: int = 4
    max_per_peer: int = 10
    auth_free_failures: int = 5
    auth_delay: float = 0.5
    auth_max_delay: float = 8.0
    auth_forget: float = 300.0
    log_burst: int = 20
    log_rate: float = 1.0
    graceful_timeout: float = 5.0
    strict_counters: bool = False
    report_cache_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.max_sessions < 0:
            raise ValueError("max_sessions must be >= 0")
        if self.lifetime <= 0:
            raise ValueError("lifetime must be > 0 seconds")
        if self.max_line < 64:
            raise ValueError("max_line must be >= 64 bytes")
        if self.auth_timeout <= 0:
            raise ValueError("auth_timeout must be > 0 seconds")
        if self.max_auth_failures < 1:
            raise ValueError("max_auth_failures must be >= 1")
        if not 0 <= self.unix_mode <= 0o7777:
            raise ValueError("unix_mode must be a file mode (0..0o7777)")
        if self.reserved_sessions < 0 or self.max_per_peer < 0:
            raise ValueError("reserved_sessions and max_per_peer must be >= 0")
        if self.auth_free_failures < 0 or self.auth_delay < 0 or self.auth_forget <= 0:
            raise ValueError("bad AUTH throttle settings")
        if self.auth_max_delay < self.auth_delay:
            raise ValueError("auth_max_delay must be >= auth_delay")
        if self.log_burst < 1 or self.log_rate <= 0:
            raise ValueError("log_burst must be >= 1 and log_rate > 0")
        if self.report_cache_bytes is not None and self.report_cache_bytes < 0:
            raise ValueError("report_cache_bytes must be >= 0")
        if self.graceful_timeout < 0:
            raise ValueError("graceful_timeout must be >= 0")

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> ServerConfig:
        """Build from a mapping, rejecting unknown keys."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown server settings: {', '.join(unknown)}")
        return cls(**values)  # type: ignore[arg-type]

"""What must hold before the daemon starts or takes a reloaded configuration, and the
exit statuses it uses (``sysexits.h``, so that systemd's ``RestartPreventExitStatus=78``
stops a restart loop on a configuration error).

* :func:`config_problems`: a ``scheduler.conf`` with no clause (empty, only comments,
  only ``*/*``) is refused: with it nothing would ever be scheduled or expire.
* :func:`listener_problems`: every listener spec (``-l``, ``PARAMmailqsock``) parses.
* :func:`socket_owner`: ``PARAMmailqsock-owner``/``-group`` names or numbers to ids.
"""

from __future__ import annotations

import grp
import pwd
from collections.abc import Iterable
from typing import Final

from mailq.server.listeners import parse_listen_spec
from scheduler.config.clauses import SchedulerConfig
from scheduler.errors import ConfigProblem

__all__ = [
    "EX_CONFIG",
    "EX_OK",
    "EX_SOFTWARE",
    "EX_TEMPFAIL",
    "EX_UNAVAILABLE",
    "config_problems",
    "listener_problems",
    "socket_owner",
]

EX_OK: Final = 0
EX_UNAVAILABLE: Final = 69  # a needed resource is busy (port in use, live scheduler)
EX_SOFTWARE: Final = 70
EX_TEMPFAIL: Final = 75
EX_CONFIG: Final = 78  # the configuration is wrong: restarting will not help


def config_problems(config: SchedulerConfig) -> list[ConfigProblem]:
    """Why ``config`` must not be used (empty: it may)."""
    if not config.clauses:
        return [
            ConfigProblem(
                config.source,
                0,
                "no clause (channel/host selector with parameters): nothing would "
                "ever be scheduled, delivered or expired",
            )
        ]
    return []


def listener_problems(specs: Iterable[str], where: str = "listener") -> list[str]:
    """One line per spec that does not parse."""
    problems = []
    for spec in specs:
        try:
            parse_listen_spec(spec)
        except ValueError as exc:
            problems.append(f"{where} {spec!r}: {exc}")
    return problems


def socket_owner(user: str | None, group: str | None) -> tuple[int, int]:
    """``(uid, gid)`` for names or numbers (-1: unchanged); ValueError if unknown."""
    uid = gid = -1
    if user:
        try:
            uid = int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid
        except KeyError:
            raise ValueError(f"no such user {user!r}") from None
    if group:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise ValueError(f"no such group {group!r}") from None
    return uid, gid

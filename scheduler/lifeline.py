"""Children that end with their parent: ``PR_SET_PDEATHSIG`` on Linux.

Transport agents, load workers and the demo's scheduler run in sessions of their own (a
Ctrl-C on the terminal is the parent's alone), so neither a terminal hang-up nor the
parent's SIGKILL would reach them. :func:`dies_with_parent` gives a ``preexec_fn`` that
asks the kernel to send them a signal when the process that started them ends, however it
ends; a parent already gone before the request took effect is caught by comparing the
parent pid. Agents also see their stdin close when the scheduler dies (the TA protocol's
EOF), which covers systems without ``prctl``.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable
from typing import Final

__all__ = ["dies_with_parent"]

PR_SET_PDEATHSIG: Final = 1


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return fn


_PRCTL: Final = _prctl()


def dies_with_parent(
    sig: int = signal.SIGTERM, then: Callable[[], None] | None = None
) -> Callable[[], None] | None:
    """A ``preexec_fn``: the child gets ``sig`` when this process ends; ``then`` runs
    after (e.g. ``os.nice``). None where the kernel offers no such thing and ``then`` is
    None."""
    prctl = _PRCTL
    if prctl is None:
        return then
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request took effect
            os.kill(os.getpid(), sig)
        if then is not None:
            then()

    return preexec

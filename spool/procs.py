"""Whether a process exists: the one ``kill(pid, 0)`` probe every package uses."""

from __future__ import annotations

import os

__all__ = ["pid_alive"]


def pid_alive(pid: int) -> bool:
    """``kill(pid, 0)`` succeeds (or fails only for lack of permission).

    A pid that names no single process (zero, negative, or too large for ``pid_t``)
    is not alive.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True

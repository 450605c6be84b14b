"""Process helpers shared by the tests that watch real processes end."""

from __future__ import annotations

from pathlib import Path

__all__ = ["gone"]


def gone(pid: int) -> bool:
    """Ended (a zombie waiting for a reaper counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")

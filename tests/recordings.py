"""Where the ZMailer recordings live: ``/work/shared/reference/zmailer-transcripts``,
else ``<repo>/../shared/reference/zmailer-transcripts`` (a checkout beside the specs)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["RECORDINGS", "recordings_dir"]

_WHERE = "shared/reference/zmailer-transcripts"


def recordings_dir() -> Path:
    """The recordings directory (the fallback path, maybe missing, if neither exists)."""
    fixed = Path("/work") / _WHERE
    if fixed.is_dir():
        return fixed
    return Path(__file__).resolve().parents[2] / _WHERE


RECORDINGS = recordings_dir()

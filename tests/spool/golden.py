"""The recorded ZMailer control files (reference/zmailer-transcripts/queue-data)."""

from __future__ import annotations

import re

from tests.recordings import RECORDINGS

QUEUE_DATA = RECORDINGS / "queue-data"
_HEADER = re.compile(rb"^==== transport/(\S+) ====\n", re.M)


def recorded(name: str = "main-run-control-files.txt") -> dict[str, bytes]:
    """``{control file name: exact bytes}`` split on the ``==== transport/NAME ====`` lines."""
    parts = _HEADER.split((QUEUE_DATA / name).read_bytes())
    return {n.decode(): body for n, body in zip(parts[1::2], parts[2::2], strict=True)}


ALL_RUNS = (
    "main-run-control-files.txt",
    "unix-run-control-files.txt",
    "run3-control-files.txt",
)

"""Errors of the spool package: one root, structured fields."""

from __future__ import annotations

__all__ = [
    "CorruptControlFile",
    "NotRegularFile",
    "OversizedFile",
    "SpoolError",
    "SubmitError",
]


class SpoolError(Exception):
    """Root of every error raised by :mod:`spool`."""


class CorruptControlFile(SpoolError):
    """A control file that cannot be trusted: truncated, unknown tag, bad field.

    ``str()`` is ``"path:line: reason"``, the form ``mailq-spool check`` prints.
    """

    def __init__(self, path: str, line: int, reason: str) -> None:
        super().__init__(path, line, reason)
        self.path = path
        self.line = line
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


class SubmitError(SpoolError):
    """A message could not be submitted; nothing was left half-written."""


class NotRegularFile(SpoolError):
    """A spool file is a symlink, FIFO, device, socket or directory: never followed,
    never read (a FIFO would block its reader for ever)."""

    def __init__(self, path: str, kind: str) -> None:
        super().__init__(f"{path}: not a regular file ({kind})")
        self.path = path
        self.kind = kind


class OversizedFile(SpoolError):
    """A control file larger than the limit: refused before it is read."""

    def __init__(self, path: str, size: int, limit: int) -> None:
        super().__init__(f"{path}: oversized control file ({size} bytes > {limit})")
        self.path = path
        self.size = size
        self.limit = limit

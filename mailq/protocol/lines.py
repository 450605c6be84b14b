"""Line framing shared by the MAILQ v2 server and client: dot-stuffing of bodies.

A multi-line reply is ``+OK until LF.LF\\n``, body lines, then ``.\\n``. A body line that
starts with ``.`` is sent with the dot doubled; the reader removes one leading dot and
stops at a line that is exactly ``.`` (POP3 rules, MQ2-REF 5.2).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

__all__ = ["BODY_END", "BODY_START", "stuff_line", "stuff_lines", "unstuff_line"]

BODY_START = b"+OK until LF.LF\n"
BODY_END = b".\n"


def stuff_line(line: str) -> str:
    """Return ``line`` (without its LF) as it goes on the wire, dot doubled if needed."""
    return "." + line if line.startswith(".") else line


def stuff_lines(lines: Iterable[str]) -> Iterator[str]:
    """Yield each body line stuffed and terminated by LF."""
    for line in lines:
        yield ("." + line + "\n") if line.startswith(".") else (line + "\n")


def unstuff_line(line: str) -> str:
    """Undo :func:`stuff_line` for one received body line (not the terminator)."""
    return line[1:] if line.startswith(".") else line

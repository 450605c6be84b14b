"""The client side of a MAILQ v2 connection, sans I/O.

Feed received bytes with :meth:`ClientConnection.receive_data` (and EOF with
:meth:`~ClientConnection.receive_eof`), pull events with
:meth:`~ClientConnection.next_event` until it returns :data:`NEED_DATA`, and send the
bytes returned by :meth:`~ClientConnection.auth` and :meth:`~ClientConnection.command`.

Framing (MQ2-REF 4-6): two greeting lines (``version zmailer 2.0``, then the challenge
or ``550 NO ACCESS FOR YOU``), then single ``+``/``-`` lines or ``+OK until LF.LF``
bodies ending at ``.``. Empty lines between replies (the KILL replies' extra LF, B2) are
skipped. EOF is reported as :class:`Closed` between replies and as
:class:`~mailq.client.errors.ProtocolError` inside a line or a body (C3 fixed).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from mailq.client.errors import ProtocolError
from mailq.protocol.auth import CHALLENGE_PREFIX, authenticator
from mailq.protocol.lines import unstuff_line

__all__ = [
    "BODY_HEADER",
    "MAX_LINE",
    "NEED_DATA",
    "AccessRefused",
    "Body",
    "ClientConnection",
    "Closed",
    "Event",
    "Greeting",
    "Reply",
]

MAX_LINE = 1 << 20
BODY_HEADER = "+OK until LF.LF"
_VERSION_PREFIX = "version zmailer 2.0"


class _NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA = _NeedData.NEED_DATA
"""Returned by :meth:`ClientConnection.next_event` when more bytes are needed."""


@dataclass(frozen=True)
class Greeting:
    """Both greeting lines were read; ``challenge`` is the whole second line."""

    version: str
    challenge: str


@dataclass(frozen=True)
class AccessRefused:
    """The second greeting line was not a challenge (normally ``550 NO ACCESS FOR YOU``)."""

    line: str


@dataclass(frozen=True)
class Reply:
    """A single status line (``+OK``, ``-BAD USER OR PASSWORD``, ...)."""

    line: str

    @property
    def ok(self) -> bool:
        return self.line.startswith("+")

    @property
    def text(self) -> str:
        """The line without its sign character."""
        return self.line[1:]


@dataclass(frozen=True)
class Body:
    """A whole ``+OK until LF.LF`` reply: its lines, dot-unstuffed, without the ``.``."""

    lines: tuple[str, ...]


@dataclass(frozen=True)
class Closed:
    """The server closed the connection at a reply boundary."""


Event = Greeting | AccessRefused | Reply | Body | Closed


class _State(enum.Enum):
    VERSION = 1
    CHALLENGE = 2
    REPLIES = 3
    BODY = 4
    CLOSED = 5


def decode(raw: bytes) -> str:
    """Bytes of one line as text; undecodable bytes survive a round trip."""
    return raw.decode("utf-8", "surrogateescape")


class ClientConnection:
    """Framing and state of one client session; no sockets, no clocks."""

    def __init__(
        self,
        *,
        max_line: int = MAX_LINE,
        line_observer: Callable[[str], None] | None = None,
    ) -> None:
        self._buf = bytearray()
        self._eof = False
        self._state = _State.VERSION
        self._version = ""
        self._body: list[str] = []
        self._max_line = max_line
        self._observer = line_observer
        self.challenge: str | None = None

    # -- input -------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        if self._eof:
            raise RuntimeError("data received after EOF")
        self._buf += data

    def receive_eof(self) -> None:
        self._eof = True

    def next_event(self) -> Event | _NeedData:
        """The next complete event, or :data:`NEED_DATA`."""
        while True:
            line = self._next_line()
            if line is None:
                return self._at_end()
            event = self._handle(line)
            if event is not None:
                return event

    def _next_line(self) -> str | None:
        end = self._buf.find(b"\n")
        if end < 0:
            if len(self._buf) > self._max_line:
                raise ProtocolError(f"server line longer than {self._max_line} bytes")
            return None
        if end > self._max_line:
            raise ProtocolError(f"server line longer than {self._max_line} bytes")
        raw = bytes(self._buf[:end])
        del self._buf[: end + 1]
        line = decode(raw)
        if self._observer is not None:
            self._observer(line)
        return line

    def _at_end(self) -> _NeedData | Closed:
        if not self._eof:
            return NEED_DATA
        if self._buf:
            raise ProtocolError(
                "connection closed inside a line", decode(bytes(self._buf))
            )
        if self._state is _State.BODY:
            raise ProtocolError("connection closed in the middle of a reply")
        if self._state in (_State.VERSION, _State.CHALLENGE):
            raise ProtocolError("connection closed before the greeting was complete")
        self._state = _State.CLOSED
        return Closed()

    def _handle(self, line: str) -> Event | None:
        state = self._state
        if state is _State.VERSION:
            if not line.startswith(_VERSION_PREFIX):
                raise ProtocolError("version mismatch", line)
            self._version = line
            self._state = _State.CHALLENGE
            return None
        if state is _State.CHALLENGE:
            self._state = _State.REPLIES
            if not line.startswith(CHALLENGE_PREFIX.rstrip()):
                self._state = _State.CLOSED
                return AccessRefused(line)
            self.challenge = line
            return Greeting(self._version, line)
        if state is _State.BODY:
            if line == ".":
                self._state = _State.REPLIES
                body, self._body = tuple(self._body), []
                return Body(body)
            self._body.append(unstuff_line(line))
            return None
        if state is _State.CLOSED:
            raise ProtocolError("data after the session ended", line)
        if line == "":
            return None  # B2: the KILL replies carry an extra empty line
        if line == BODY_HEADER:
            self._state = _State.BODY
            return None
        return Reply(line)

    # -- output ------------------------------------------------------------------
    def auth(self, user: str, password: str) -> bytes:
        """The ``AUTH user digest`` line for the challenge read in the greeting."""
        if self.challenge is None:
            raise RuntimeError("AUTH before the challenge was read")
        _check_word(user)
        return self.command(f"AUTH {user} {authenticator(self.challenge, password)}")

    def command(self, line: str) -> bytes:
        """One command line as bytes; CR and LF are refused (no command injection)."""
        if "\n" in line or "\r" in line:
            raise ValueError("a command must not contain CR or LF")
        return (line + "\n").encode("utf-8", "surrogateescape")


def _check_word(word: str) -> None:
    if not word or any(c in word for c in " \t\r\n"):
        raise ValueError(f"bad user name {word!r}")

"""The sans-IO MAILQ v2 server connection (h11 style: bytes in, events out).

``receive_data(bytes)`` buffers (``b""`` = EOF); ``next_event()`` returns the next event
or ``None`` when it needs more data; ``send(...)`` turns a reply into bytes and moves the
state machine. Framing (MQ2-REF 5.1): lines end at LF, every CR anywhere is deleted, a
NUL truncates the line, and a line longer than ``max_line`` bytes is connection-fatal
(B10 fix). Before AUTH only ``AUTH``/``QUIT``/``EXIT`` are accepted; after ``QUIT`` or
``EXIT`` nothing more is read (B9 fix). AUTH failures are budgeted (A6 fix).

The core never decides rights or formats reports; :mod:`mailq.server.service` does.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Final

from mailq.protocol import replies
from mailq.protocol.commands import Right, parse_line, split_word
from mailq.protocol.errors import LocalProtocolError, RemoteProtocolError
from mailq.protocol.lines import BODY_END, BODY_START
from mailq.protocol.states import TRANSITIONS, State

__all__ = [
    "BATCH_LINES",
    "CHUNK_BYTES",
    "MAX_AUTH_FAILURES",
    "MAX_LINE_BYTES",
    "AuthAccepted",
    "AuthRejected",
    "AuthRequest",
    "Bye",
    "Command",
    "ConnectionClosed",
    "EncodedBody",
    "Event",
    "Greeting",
    "InvalidCommand",
    "MultilineReply",
    "Quit",
    "Reply",
    "ServerConnection",
    "ServerReply",
]

MAX_LINE_BYTES: Final[int] = 16384
MAX_AUTH_FAILURES: Final[int] = 3
CHUNK_BYTES: Final[int] = 65536
BATCH_LINES: Final[int] = 256  # lines formatted, stuffed and encoded together


# ---- events (peer -> us) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """``AUTH user digest`` while unauthenticated (digest kept verbatim)."""

    user: str
    digest: str

    def __repr__(self) -> str:  # the digest is a credential: never in logs
        return f"AuthRequest(user={self.user!r}, digest=<hidden>)"


@dataclass(frozen=True, slots=True)
class Command:
    """An authenticated command line split into verb and verbatim rest."""

    verb: str
    rest: str


@dataclass(frozen=True, slots=True)
class InvalidCommand:
    """A line refused by the core itself (before AUTH); ``reply`` is the answer."""

    verb: str
    reply: str


@dataclass(frozen=True, slots=True)
class Quit:
    """``QUIT`` or ``EXIT`` (any case)."""


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """EOF (a partial last line is discarded) or the session already ended."""


Event = AuthRequest | Command | InvalidCommand | Quit | ConnectionClosed


# ---- replies (us -> peer) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Greeting:
    """The version line plus the challenge, or plus ``550`` when not ``allowed``."""

    allowed: bool


@dataclass(frozen=True, slots=True)
class Reply:
    """A single-line reply (``text`` without the final LF)."""

    text: str


class EncodedBody(ABC, Iterable[str]):
    """Body lines that can also give their wire bytes directly.

    Iterating gives the lines (``str``, as any body); :meth:`encoded` gives the same
    body already dot-stuffed and encoded, LF after each line, as
    :func:`encode_body_lines` would make it, in pieces of any size (a report served
    from cached bytes). :meth:`ServerConnection.send_chunks` uses :meth:`encoded`.
    """

    @abstractmethod
    def encoded(self) -> Iterator[bytes]:
        """The body's bytes (no ``+OK`` line, no ``.`` terminator)."""


@dataclass(frozen=True, slots=True)
class MultilineReply:
    """``+OK until LF.LF``, the stuffed body lines, ``.``."""

    lines: Iterable[str]


@dataclass(frozen=True, slots=True)
class AuthAccepted:
    user: str
    rights: Right


@dataclass(frozen=True, slots=True)
class AuthRejected:
    text: str


@dataclass(frozen=True, slots=True)
class Bye:
    """``+Bye bye``: the last thing sent after QUIT/EXIT."""


ServerReply = Greeting | Reply | MultilineReply | AuthAccepted | AuthRejected | Bye

_QUIT_VERBS: Final = frozenset({"QUIT", "EXIT"})


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _stuff_batch(lines: list[str]) -> str:
    """Body lines joined with LF after each; an embedded LF becomes a space, and a
    line starting with ``.`` gets a second one (the same rules as line by line)."""
    text = "\n".join(lines)
    if text.count("\n") != len(lines) - 1:  # some line holds an LF
        text = "\n".join([line.replace("\n", " ") for line in lines])
    if "\n." in text:
        text = text.replace("\n.", "\n..")
    if text[:1] == ".":
        text = "." + text
    return text + "\n"


def encode_body_lines(lines: list[str]) -> bytes:
    """Body lines as sent inside a multi-line reply (dot-stuffed, LF after each)."""
    return _encode(_stuff_batch(lines)) if lines else b""


class ServerConnection:
    """One MAILQ v2 session, without I/O."""

    def __init__(
        self,
        challenge: str,
        *,
        max_line: int = MAX_LINE_BYTES,
        max_auth_failures: int = MAX_AUTH_FAILURES,
    ) -> None:
        self.challenge = challenge
        self.max_line = max_line
        self.max_auth_failures = max_auth_failures
        self.state = State.AWAIT_AUTH
        self.user: str | None = None
        self.rights = Right.NONE
        self.auth_failures = 0
        self._buffer = bytearray()
        self._scanned = 0  # bytes of the buffer known to hold no LF
        self._eof = False
        self._greeted = False

    # -- input -------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Buffer received bytes; ``b""`` marks EOF."""
        if self._eof and data:
            raise LocalProtocolError("data received after EOF")
        if data:
            self._buffer += data
        else:
            self._eof = True

    def next_event(self) -> Event | None:
        """The next event, or None if more data is needed.

        Raises :class:`RemoteProtocolError` (and enters ``ERROR``) for an over-long line.
        """
        if self.state in (State.CLOSED, State.ERROR):
            return ConnectionClosed()
        buf = self._buffer
        end = buf.find(b"\n", self._scanned, self.max_line + 1)
        if end < 0:
            self._scanned = min(len(buf), self.max_line + 1)
            if len(buf) > self.max_line:
                self._set_state(State.ERROR)
                raise RemoteProtocolError(f"line longer than {self.max_line} bytes")
            if self._eof:
                self._set_state(State.CLOSED)
                return ConnectionClosed()
            return None
        raw = bytes(buf[:end])
        del buf[: end + 1]
        self._scanned = 0
        return self._line_event(raw)

    def _line_event(self, raw: bytes) -> Event:
        nul = raw.find(b"\0")
        if nul >= 0:
            raw = raw[:nul]
        line = raw.replace(b"\r", b"").decode("utf-8", "surrogateescape")
        verb, rest = parse_line(line)
        if verb.upper() in _QUIT_VERBS:
            self._set_state(State.CLOSED)
            self._buffer.clear()  # B9 fix: nothing after QUIT is processed
            self._scanned = 0
            return Quit()
        if self.state is State.READY:
            return Command(verb, rest)
        if verb == "AUTH":
            user, digest = split_word(rest)
            return AuthRequest(user, digest)
        return InvalidCommand(verb, replies.MUST_AUTHENTICATE)

    # -- output ------------------------------------------------------------------------

    def send(self, reply: ServerReply) -> bytes:
        """Serialise ``reply`` and apply its state change."""
        if isinstance(reply, MultilineReply):
            return b"".join(self.send_chunks(reply))
        if isinstance(reply, Bye):
            return _encode(replies.BYE + "\n")
        self._check_open(reply)
        if isinstance(reply, Greeting):
            return self._send_greeting(reply)
        if isinstance(reply, AuthAccepted):
            if self.state is not State.AWAIT_AUTH:
                raise LocalProtocolError("AUTH accepted twice")
            self.user = reply.user
            self.rights = reply.rights
            self._set_state(State.READY)
            return _encode(replies.AUTH_OK + "\n")
        if isinstance(reply, AuthRejected):
            self.auth_failures += 1
            if self.auth_failures >= self.max_auth_failures:
                self._set_state(State.CLOSED)
            return _encode(reply.text + "\n")
        return _encode(reply.text + "\n")

    def _send_greeting(self, greeting: Greeting) -> bytes:
        if self._greeted:
            raise LocalProtocolError("greeting sent twice")
        self._greeted = True
        if not greeting.allowed:
            self._set_state(State.CLOSED)
            return _encode(f"{replies.VERSION}\n{replies.NO_ACCESS}\n")
        return _encode(f"{replies.VERSION}\n{self.challenge}\n")

    def send_chunks(
        self, reply: MultilineReply, chunk_bytes: int = CHUNK_BYTES
    ) -> Iterator[bytes]:
        """A multi-line reply as chunks of about ``chunk_bytes``, dot-stuffed per line.

        The last chunk ends with the ``.`` terminator; the body always ends with LF
        (B13 fix), and an LF inside a line is replaced so it cannot end the body early.
        Lines are taken in batches, joined, stuffed and encoded a batch at a time.
        """
        self._check_open(reply)
        if isinstance(reply.lines, EncodedBody):
            yield BODY_START
            yield from reply.lines.encoded()
            yield BODY_END
            return
        lines = iter(reply.lines)
        pending: list[bytes] = [BODY_START]
        size = 0
        while batch := list(islice(lines, BATCH_LINES)):
            data = _encode(_stuff_batch(batch))
            pending.append(data)
            size += len(data)
            if size >= chunk_bytes:
                yield b"".join(pending)
                pending = []
                size = 0
        pending.append(BODY_END)
        yield b"".join(pending)

    # -- state -------------------------------------------------------------------------

    def close(self) -> None:
        """Mark the session closed (shutdown, lifetime, errors in the shell)."""
        if self.state not in (State.CLOSED, State.ERROR):
            self._set_state(State.CLOSED)

    def _check_open(self, reply: ServerReply) -> None:
        if isinstance(reply, Greeting):
            if self.state is not State.AWAIT_AUTH:
                raise LocalProtocolError("greeting after the session started")
            return
        if self.state in (State.CLOSED, State.ERROR):
            raise LocalProtocolError(f"cannot send {type(reply).__name__} when closed")

    def _set_state(self, new: State) -> None:
        if new not in TRANSITIONS[self.state]:
            raise LocalProtocolError(f"{self.state.name} -> {new.name} not allowed")
        self.state = new

"""Errors of the MAILQ v2 client library, each with structured fields and an exit code.

They live under the package root :class:`mailq.protocol.errors.MailqError`. Every error carries
the ``sysexits`` code the ``mailq`` command exits with (docs/client.md, "Exit codes").
"""

from __future__ import annotations

from mailq.protocol.errors import MailqError

__all__ = [
    "EX_NOPERM",
    "EX_OK",
    "EX_REFUSED",
    "EX_TEMPFAIL",
    "EX_UNAVAILABLE",
    "EX_USAGE",
    "AccessDenied",
    "AuthError",
    "ClientError",
    "CommandRefused",
    "ConnectError",
    "ProtocolError",
]

EX_OK = 0
EX_REFUSED = 1
EX_USAGE = 64
EX_UNAVAILABLE = 69
EX_TEMPFAIL = 75
EX_NOPERM = 77


class ClientError(MailqError):
    """Root of the client errors; ``exit_code`` is what ``mailq`` exits with."""

    exit_code = EX_TEMPFAIL


class ConnectError(ClientError):
    """No address of ``host`` accepted a connection, or the name did not resolve."""

    exit_code = EX_UNAVAILABLE

    def __init__(self, host: str, reason: str, *, unknown_host: bool = False) -> None:
        super().__init__(host, reason)
        self.host = host
        self.reason = reason
        self.unknown_host = unknown_host

    def __str__(self) -> str:
        if self.unknown_host:
            return f"cannot find address of {self.host}"
        return f"connect failed to {self.host}: {self.reason}"


class AuthError(ClientError):
    """The server refused the login; ``reply`` is its line without the leading ``-``."""

    exit_code = EX_NOPERM

    def __init__(self, user: str, host: str, reply: str) -> None:
        super().__init__(user, host, reply)
        self.user = user
        self.host = host
        self.reply = reply

    def __str__(self) -> str:
        return f"User '{self.user}' not accepted to server '{self.host}'; err='{self.reply}'"


class AccessDenied(AuthError):
    """The greeting's second line was not a challenge (``550 NO ACCESS FOR YOU``)."""

    def __init__(self, host: str, line: str) -> None:
        super().__init__("", host, line)
        self.line = line

    def __str__(self) -> str:
        return f"server {self.host} refused access: {self.line}"


class ProtocolError(ClientError):
    """The server broke the protocol: EOF mid-reply, a bad greeting, an overlong line."""

    exit_code = EX_TEMPFAIL

    def __init__(self, reason: str, line: str | None = None) -> None:
        super().__init__(reason, line)
        self.reason = reason
        self.line = line

    def __str__(self) -> str:
        return self.reason if self.line is None else f"{self.reason}: {self.line!r}"


class CommandRefused(ClientError):
    """A command got a ``-`` reply; ``reply`` is the whole line, sign included."""

    exit_code = EX_REFUSED

    def __init__(self, command: str, reply: str) -> None:
        super().__init__(command, reply)
        self.command = command
        self.reply = reply

    def __str__(self) -> str:
        return f"Scheduler response: '{self.reply}'"

"""Errors of the MAILQ v2 package.

Hierarchy::

    MailqError
    ├── RemoteProtocolError   the peer broke the framing or used up a budget (close it)
    ├── LocalProtocolError    our own code misused the sans-IO core (a bug)
    ├── AuthFileError         scheduler.auth could not be read (path, reason)
    └── ListenError           a listener could not be created (address, reason)

The peer never sees any of these texts.
"""

from __future__ import annotations

__all__ = [
    "AuthFileError",
    "ListenError",
    "LocalProtocolError",
    "MailqError",
    "RemoteProtocolError",
]


class MailqError(Exception):
    """Root of every error raised by :mod:`mailq`."""


class RemoteProtocolError(MailqError):
    """The peer broke the protocol in a way that ends the session."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LocalProtocolError(MailqError):
    """Our code asked the core for something impossible in its current state."""


class AuthFileError(MailqError):
    """The auth file is missing or unreadable."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class ListenError(MailqError):
    """A listening socket could not be created."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(
            f"cannot listen on {address}: {reason}; choose another listener with "
            "-l SPEC (e.g. -l TCP:1174 or -l UNIX:/path) or PARAMmailqsock in "
            "scheduler.conf"
        )
        self.address = address
        self.reason = reason

"""Every text the MAILQ v2 server sends, byte for byte (MQ2-REF 8.11).

Constants are the line without its final LF; the connection adds it. The KILL replies
carry ZMailer's extra empty line (B2 keep) as an embedded ``\\n``.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "AUTH_BAD_PASSWORD",
    "AUTH_BAD_USER",
    "AUTH_OK",
    "BYE",
    "ETRN_DENIED",
    "ETRN_NOTHING",
    "ETRN_STARTED",
    "KILL_DENIED",
    "KILL_NO_SUCH_MESSAGE",
    "KILL_NO_SUCH_THREAD",
    "KILL_OK",
    "KILL_UNKNOWN_REQUEST",
    "MUST_AUTHENTICATE",
    "NO_ACCESS",
    "REQUEUE_NO_SUCH_MESSAGE",
    "REQUEUE_OK",
    "SHUTTING_DOWN",
    "VERSION",
    "unknown_command",
]

VERSION: Final = "version zmailer 2.0"
NO_ACCESS: Final = "550 NO ACCESS FOR YOU"
AUTH_OK: Final = "+OK"
AUTH_BAD_USER: Final = "-BAD USER OR AUTHENTICATOR OR CONTACT ADDRESS"
AUTH_BAD_PASSWORD: Final = "-BAD USER OR PASSWORD"
MUST_AUTHENTICATE: Final = "-BAD; USER MUST AUTHENTICATE"
BYE: Final = "+Bye bye"
ETRN_STARTED: Final = "+OK; an ETRN started something."
ETRN_NOTHING: Final = "+OK; an ETRN didn't start anything."
ETRN_DENIED: Final = "-No ETRN allowed for you."
KILL_OK: Final = "+OK; KILLed something.\n"
KILL_NO_SUCH_MESSAGE: Final = "-No such message.\n"
KILL_NO_SUCH_THREAD: Final = "-No such thread.\n"
KILL_UNKNOWN_REQUEST: Final = "-Unknown request.\n"
KILL_DENIED: Final = "-No KILL allowed for you."
REQUEUE_OK: Final = "+OK; REQUEUEd something."
REQUEUE_NO_SUCH_MESSAGE: Final = "-No such message."
SHUTTING_DOWN: Final = "-MAILQ2 scheduler shutting down"


def unknown_command(verb: str, rest: str) -> str:
    """The shared unknown-or-refused reply (MQ2-REF 8.10, B8 keep)."""
    return (
        "-MAILQ2 Unknown command, or refused by access control; "
        f"VERB='{verb}' REST='{rest}'"
    )

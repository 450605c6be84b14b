"""The states of a MAILQ v2 server session and the allowed transitions."""

from __future__ import annotations

import enum
from typing import Final

__all__ = ["TRANSITIONS", "State"]


class State(enum.Enum):
    """Where a session stands."""

    AWAIT_AUTH = "AWAIT_AUTH"  # greeting sent, no successful AUTH yet
    READY = "READY"  # authenticated: commands are executed
    CLOSED = "CLOSED"  # QUIT, EOF, refusal or budget used up: nothing more is read
    ERROR = "ERROR"  # the peer broke the framing (over-long line)


TRANSITIONS: Final[dict[State, frozenset[State]]] = {
    State.AWAIT_AUTH: frozenset({State.READY, State.CLOSED, State.ERROR}),
    State.READY: frozenset({State.CLOSED, State.ERROR}),
    State.CLOSED: frozenset(),
    State.ERROR: frozenset(),
}

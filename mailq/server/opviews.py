"""The seam between the operator commands of the server and the scheduler daemon.

The server parses, guards, records and formats; the daemon's
:class:`ControlPlane` implementation finds messages, changes the core and the postoffice.
Messages cross the seam by spool-id.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mailq.protocol.connection import ServerReply
from spool.filters import Filter

__all__ = [
    "AsyncBody",
    "ControlPlane",
    "Deferred",
    "MessageDetail",
    "MessageRow",
    "RecipientRow",
    "RuleRow",
]


@dataclass(frozen=True, slots=True)
class Deferred:
    """A reply that needs work spread over several loop turns: the shell awaits
    ``run()`` and sends what it returns (bulk operations never stall the loop)."""

    run: Callable[[], Awaitable[ServerReply | AsyncBody]]


@dataclass(frozen=True, slots=True)
class AsyncBody:
    """A ``+OK until LF.LF`` body produced by an async generator of line batches: the
    shell writes each batch as it comes (a sparse scan streams its first line early
    and never stalls the loop)."""

    batches: AsyncIterator[list[str]]


@dataclass(frozen=True, slots=True)
class MessageRow:
    """One line of ``SHOW MSGS``."""

    sid: str
    path: str
    state: str
    arrival: int
    size: int
    sender: str
    rcpts: int
    destinations: tuple[str, ...]

    def line(self, now: int) -> str:
        return "\t".join(
            (
                self.sid,
                self.path,
                self.state,
                str(max(0, now - self.arrival)),
                str(self.size),
                self.sender or "<>",
                str(self.rcpts),
                ",".join(self.destinations),
            )
        )


@dataclass(frozen=True, slots=True)
class RecipientRow:
    channel: str
    host: str
    address: str
    status: str
    attempts: int
    next_retry: int
    expiry: int
    diagnostic: str


@dataclass(frozen=True, slots=True)
class MessageDetail:
    row: MessageRow
    message_id: str
    hold: tuple[int, str, str] | None  # since, op, reason
    recipients: Sequence[RecipientRow] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class RuleRow:
    """A suspension or policy as ``SHOW SUSPENDS``/``SHOW POLICIES`` print it."""

    id: str
    kind: str
    selector: str
    until: int
    reason: str
    limits: str
    created: int
    user: str


class ControlPlane(Protocol):
    """What the operator commands need from the scheduler."""

    def resolve(self, ident: str) -> str | None:
        """The spool-id of the message named by any id form, or None."""

    def rows(self, flt: Filter) -> Iterator[MessageRow | None]:
        """Matching messages, lazily; None now and then while scanning (a tick)."""

    def detail(self, sid: str) -> MessageDetail | None: ...

    def thread_targets(self, channel: str, host: str) -> Iterator[tuple[str, int]]:
        """(spool-id, recipients in the thread) of every message in a thread."""

    def filter_targets(self, flt: Filter) -> Iterator[tuple[str, int] | None]:
        """(spool-id, recipients) of every message the filter matches; None ticks."""

    async def find_message_id(self, message_id: str) -> str | None:
        """The spool-id of the message with this ``Message-ID`` (reads message files)."""

    def hold(
        self, sids: Sequence[str], reason: str, op: str, *, save: bool = True
    ) -> tuple[int, int]:
        """Hold; (messages, recipients) newly held; persisted unless ``save`` False."""

    def release(
        self, sids: Sequence[str], op: str, *, save: bool = True
    ) -> tuple[int, int]: ...

    async def save(self) -> None:
        """Persist the holds (after ``save=False`` calls), off the event loop."""

    def held_by(self, op: str) -> list[str]:
        """Spool-ids still held by operation ``op``."""

    def retry(self, sids: Sequence[str], at: int) -> tuple[int, int]: ...

    def delete(
        self, sids: Sequence[str], op: str, *, save: bool = True
    ) -> tuple[int, int]:
        """Move into the trash of ``op``; (messages, recipients)."""

    async def undelete(self, op: str) -> int:
        """Bring back what ``DELETE`` op moved to the trash; messages restored."""

    def bounce(
        self, sids: Sequence[str], reason: str, *, save: bool = True
    ) -> tuple[int, int]: ...

    def kill_thread(self, channel: str, host: str) -> int: ...

    def add_rule(self, row: RuleRow, fields: dict[str, str]) -> None: ...

    def load_ops(self) -> list[dict[str, str]]:
        """The operation log kept in the postoffice, oldest first (``undone=1`` set)."""

    async def save_op(self, fields: dict[str, str], sids: Sequence[str]) -> None:
        """Append an operation (and the spool-ids its UNDO needs) to the log."""

    async def mark_undone(self, op: str) -> None: ...

    def op_ids_in_use(self) -> list[str]:
        """Operation ids the trash and the holds file name (read at the first use)."""

    async def op_sids(self, op: str) -> list[str]:
        """The spool-ids kept with ``op`` (a RELEASE's, for its UNDO)."""

    def remove_rule(self, rule_id: str) -> RuleRow | None: ...

    def rules(self, kind: str) -> list[RuleRow]: ...

    async def shape(self, by: str, top: int) -> list[str]: ...

    def explain_thread(self, channel: str, host: str) -> list[str] | None: ...

    def explain_msg(self, sid: str) -> list[str] | None: ...

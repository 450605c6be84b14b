"""Executing MAILQ v2 commands against the scheduler's views (MQ2-REF 8).

:class:`Service` maps each event of a :class:`~mailq.protocol.connection.ServerConnection` to a
reply: the AUTH procedure, the command table with the rights each command needs, the
``SC.MQ2*`` counters and the audit log of state-changing commands. It performs no I/O:
the auth file is handed in by the shell, reports are lazy generators that the shell
streams.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from mailq.protocol import replies
from mailq.protocol.auth import verify
from mailq.protocol.commands import BLANKS, Right, split_word
from mailq.protocol.connection import (
    AuthAccepted,
    AuthRejected,
    AuthRequest,
    Bye,
    Command,
    ConnectionClosed,
    Event,
    InvalidCommand,
    MultilineReply,
    Quit,
    Reply,
    ServerReply,
)
from mailq.server import opctl, reports
from mailq.server.authfile import AuthFile, Peer
from mailq.server.opviews import ControlPlane, Deferred
from mailq.server.views import QueueOperations, QueueView
from mailq.server.watch import EventSource, WatchRequest, parse_where

__all__ = ["Client", "Service"]

logger = logging.getLogger(__name__)
audit = logging.getLogger("mailq.audit")


def _audit(client: Client, fmt: str, *args: object) -> None:
    """One line of the audit log: who (user and peer), then what and its result."""
    audit.info("user=%s peer=%s " + fmt, client.user, client.peer, *args)


_C: Final = "SC.MQ2"


@dataclass(slots=True)
class Client:
    """What the service knows about one session."""

    peer: Peer
    challenge: str = field(repr=False)
    user: str | None = None
    rights: Right = Right.NONE

    @property
    def who(self) -> str:
        return f"{self.user or '-'}@{self.peer}"

    def __str__(self) -> str:  # log arguments are formatted only when emitted
        return self.who


Handler = Callable[
    ["Service", Client, str, int], "ServerReply | WatchRequest | Deferred"
]


def _may(client: Client, right: Right) -> bool:
    """``client.rights & right``, on plain ints (a Flag's ``&`` costs microseconds)."""
    return int(client.rights) & int(right) != 0


def _name_arg(text: str) -> str:
    """SHOW THREAD / KILL THREAD names: lower-cased, trailing blanks stripped (B18)."""
    return text.rstrip(BLANKS + "\r").lower()


class Service:
    """The command table and its handlers over one ``QueueView``/``QueueOperations``."""

    def __init__(
        self,
        view: QueueView,
        ops: QueueOperations,
        clock: Callable[[], float],
        *,
        strict_counters: bool = False,
        report_cache_bytes: int | None = None,
    ) -> None:
        self.view = view
        self.details = reports.DetailCache(report_cache_bytes)  # SHOW THREAD rows
        self.ops = ops
        self.clock = clock
        self.strict_counters = strict_counters
        # extensions the daemon plugs in: SHOW METRICS and WATCH (docs/monitoring.md)
        self.metrics: Callable[[], str] | None = None
        self.events: EventSource | None = None
        self.control: ControlPlane | None = (
            None  # operator commands (mailq.server.opctl)
        )
        self.opstate = opctl.OperatorState()

    # -- counters ----------------------------------------------------------------------

    def count(self, name: str, by: int = 1) -> None:
        """Increment ``SC.MQ2<name>`` (never fails the session)."""
        self.view.counters.incr(_C + name, by)

    def set_parallel(self, sessions: int) -> None:
        self.view.counters.set(_C + "Parallel-G", sessions)

    def now(self) -> int:
        return int(self.clock())

    # -- events ------------------------------------------------------------------------

    def handle(
        self, event: Event, client: Client, auth: Callable[[], AuthFile | None]
    ) -> ServerReply | WatchRequest | Deferred | None:
        """The reply to one event; ``None`` for :class:`ConnectionClosed`; a
        :class:`Deferred` for operator commands whose work spans loop turns."""
        if isinstance(event, ConnectionClosed):
            return None
        self.count("Commands")
        if isinstance(event, Quit):
            self.count("CommandQUIT")
            logger.debug("%s QUIT", client)
            return Bye()
        if isinstance(event, AuthRequest):
            return self.authenticate(event, client, auth())
        if isinstance(event, InvalidCommand):
            self.count("CommandsRej")
            logger.info("%s refused before AUTH: %r", client.who, event.verb[:40])
            return Reply(event.reply)
        return self.execute(event, client)

    def authenticate(
        self, request: AuthRequest, client: Client, auth: AuthFile | None
    ) -> AuthAccepted | AuthRejected:
        """ZMailer's AUTH procedure (MQ2-REF 6); the auth file was just re-read."""
        self.count("CommandAUTH")
        entry = None if auth is None else auth.find(request.user, client.peer)
        if entry is None:
            self.count("AuthRej")
            logger.info("%s AUTH %r refused: no usable line", client.who, request.user)
            return AuthRejected(replies.AUTH_BAD_USER)
        if not verify(client.challenge, entry.password, request.digest):
            self.count("AuthRej")
            logger.info(
                "%s AUTH %r refused: bad authenticator", client.who, request.user
            )
            return AuthRejected(replies.AUTH_BAD_PASSWORD)
        client.user = request.user
        client.rights = entry.rights
        logger.debug("%s AUTH ok (line %d)", client, entry.line_no)
        return AuthAccepted(request.user, entry.rights)

    def execute(
        self, command: Command, client: Client
    ) -> ServerReply | WatchRequest | Deferred:
        """Run an authenticated command through the table."""
        handler = _TABLE.get(command.verb)
        if handler is None:
            return self._unknown(client, command.verb, command.rest)
        return handler(self, client, command.rest, self.now())

    # -- handlers ----------------------------------------------------------------------

    def _unknown(self, client: Client, verb: str, rest: str) -> Reply:
        self.count("CommandsRej")
        shown = rest
        if verb.upper() == "AUTH":  # AUTH after login: never log the authenticator
            shown = split_word(rest)[0] + " <hidden>"
        logger.info("%s unknown or refused: %r %r", client.who, verb[:40], shown[:80])
        return Reply(replies.unknown_command(verb, rest))

    def _show(self, client: Client, rest: str, now: int) -> ServerReply | Deferred:
        word, args = split_word(rest)
        if word == "COUNTERS":
            if self.strict_counters and not _may(client, Right.SNMP):
                return self._unknown(client, "SHOW", word)
            self.count("CommandShowCounters")
            return MultilineReply(self.view.counters.dump(now))
        if word == "SNMP" and _may(client, Right.SNMP):
            self.count("CommandShowQueueVeryShort")
            return MultilineReply(reports.snmp_report(self.view, now))
        if word == "QUEUE":
            return self._show_queue(client, args, now)
        if word == "METRICS" and _may(client, Right.SNMP) and self.metrics:
            return MultilineReply(self.metrics().splitlines())
        extension = opctl.SHOW_TABLE.get(word)
        if extension is not None:
            return extension(self, client, args, now)
        if word == "THREAD" and _may(client, Right.TT):
            channel, host = split_word(args)
            self.count("CommandShowThread")
            logger.debug("%s SHOW THREAD %r %r", client, channel, host)
            return MultilineReply(
                self.details.report(self.view, _name_arg(channel), _name_arg(host), now)
            )
        return self._unknown(client, "SHOW", word)  # REST = first word only (B8)

    def _show_queue(
        self, client: Client, args: str, now: int
    ) -> ServerReply | Deferred:
        mode, _ = split_word(args)
        if mode == "SHORT" and _may(client, Right.QQ):
            self.count("CommandShowQueueShort")
            return MultilineReply(reports.short_report(self.view, now))
        if mode == "THREADS" and _may(client, Right.TT):
            self.count("CommandShowQueueThreads2")  # B6 kept: as ZMailer counts it
            return MultilineReply(reports.threads_report(self.view, now))
        if mode == "THREADS2" and _may(client, Right.TT):
            self.count("CommandShowQueueThreads2")
            return MultilineReply(reports.threads2_report(self.view, now))
        if mode == "SHAPE":
            return opctl.show_shape(self, client, args[len("SHAPE") :], now)
        return self._unknown(client, "SHOW", "QUEUE")

    def _etrn(self, client: Client, rest: str, now: int) -> Reply:
        self.count("CommandETRN")  # counted before the rights check, as ZMailer does
        if not _may(client, Right.ETRN):
            _audit(client, "ETRN %r result=denied", rest)
            return Reply(replies.ETRN_DENIED)
        domain, extra = split_word(rest)
        domain = domain.lower()  # B16 fix
        started = self.ops.etrn(domain) if domain else 0
        _audit(client, "ETRN %r %r result=%d started", domain, extra, started)
        return Reply(replies.ETRN_STARTED if started > 0 else replies.ETRN_NOTHING)

    def _kill(self, client: Client, rest: str, now: int) -> Reply | Deferred:
        if not _may(client, Right.KILL):
            _audit(client, "KILL %r result=denied", rest)
            return Reply(replies.KILL_DENIED)
        what, args = split_word(rest)
        guarded = opctl.kill_thread(self, client, rest, now)  # ... CONFIRM [token]
        if guarded is not None:
            return guarded
        if what == "MSG":  # not counted: ZMailer never counts MQ2CommandKillMsg
            ident, _ = split_word(args)
            found = bool(ident) and self.ops.kill_msg(ident)
            _audit(
                client,
                "KILL MSG %r result=%s",
                ident,
                "killed" if found else "not-found",
            )
            return Reply(replies.KILL_OK if found else replies.KILL_NO_SUCH_MESSAGE)
        # KILL THREAD is answered as ZMailer answers it ("-Unknown request."), and
        # deletes nothing: an old client or a typo never loses mail (issue 12 item 10).
        _audit(client, "KILL %r result=unknown-request", rest)
        return Reply(replies.KILL_UNKNOWN_REQUEST)

    def _requeue(self, client: Client, rest: str, now: int) -> Reply:
        what, args = split_word(rest)
        if what != "MSG" or not _may(client, Right.KILL):
            return self._unknown(client, "REQUEUE", rest)  # what old servers answered
        ident, _ = split_word(args)
        found = bool(ident) and self.ops.requeue_msg(ident)
        _audit(
            client,
            "REQUEUE MSG %r result=%s",
            ident,
            "requeued" if found else "not-found",
        )
        return Reply(replies.REQUEUE_OK if found else replies.REQUEUE_NO_SUCH_MESSAGE)

    def _watch(self, client: Client, rest: str, now: int) -> Reply | WatchRequest:
        if self.events is None or not _may(client, Right.WATCH):
            return self._unknown(client, "WATCH", rest)
        try:
            accept = parse_where(rest)
        except ValueError as exc:
            return Reply(f"-WATCH: {exc}")
        logger.info("%s WATCH %r", client, rest[:200])
        return WatchRequest(self.events, accept)

    def _reroute(self, client: Client, rest: str, now: int) -> Reply:
        word, _ = split_word(rest)
        return self._unknown(client, "REROUTE", word)  # MQ2-REF 8.9: first word only


_TABLE: Final[dict[str, Handler]] = {
    "SHOW": Service._show,
    "ETRN": Service._etrn,
    "KILL": Service._kill,
    "REQUEUE": Service._requeue,
    "REROUTE": Service._reroute,
    "WATCH": Service._watch,
    **opctl.TABLE,
}

"""The operator commands of MAILQ v2 (docs/protocol.md "Operator control").

``SHOW MSG``, ``SHOW MSGS``, ``SHOW OPS``, ``SHOW SUSPENDS``, ``SHOW POLICIES``,
``SHOW QUEUE SHAPE``, ``EXPLAIN``, ``HOLD``, ``RELEASE``, ``RETRY``, ``BOUNCE``,
``DELETE``, ``UNDO``, ``SUSPEND``, ``RESUME``, ``POLICY`` and the guard of ``KILL THREAD``.

A target is one message id, ``THREAD <channel> <host>`` or ``WHERE <filter>``. The last two
first answer a preview whose status line holds ``CONFIRM <token>``; the same command with
``CONFIRM <token>`` appended within :data:`TOKEN_LIFETIME` seconds acts on exactly the
messages the preview counted (those still queued). Acting replies carry ``op=<id>``; each
operation is kept for ``SHOW OPS`` and ``UNDO`` and written to the audit log.
"""

from __future__ import annotations

import asyncio
import calendar
import datetime
import logging
import re
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from mailq.protocol import replies
from mailq.protocol.commands import Right, split_word
from mailq.protocol.connection import MultilineReply, Reply, ServerReply
from mailq.server.opviews import AsyncBody, ControlPlane, Deferred, RuleRow
from spool.filters import Filter, FilterError, parse_filter, split_terms

if TYPE_CHECKING:
    from mailq.server.service import Client, Service

__all__ = ["TABLE", "OperatorState", "parse_duration", "parse_time"]

audit = logging.getLogger("mailq.audit")
T = TypeVar("T")

TOKEN_LIFETIME = 60
PREVIEW_IDS = 5
OPS_KEPT = 1000
NO_CONTROL = "-Operator control is not available on this server."
NO_SUCH_MESSAGE = "-No such message."
_TERM_WORD = re.compile(r"[A-Za-z]+(<=|>=|!=|!~|=|<|>|~)")
_DURATION = re.compile(r"(\d+)([smhdw]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> int:
    """``90``, ``15m``, ``2h``, ``1d``, ``1w`` -> seconds; ValueError otherwise."""
    total = 0
    pos = 0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += int(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"bad duration {text!r} (like 90s, 15m, 2h, 1d)")
    return total


def parse_time(text: str, now: int) -> int:
    """``now``, ``+15m``, epoch seconds, or ISO 8601 (UTC unless it says) -> epoch."""
    if text == "now":
        return now
    if text.startswith("+"):
        return now + parse_duration(text[1:])
    if text.isdigit():
        return int(text)
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"bad time {text!r} (now, +15m, epoch or ISO 8601)") from None
    if when.tzinfo is None:
        return calendar.timegm(when.timetuple())
    return int(when.timestamp())


@dataclass(slots=True)
class Operation:
    id: str
    time: int
    user: str
    peer: str
    command: str
    verb: str
    messages: int
    recipients: int
    sids: tuple[str, ...] = ()
    rule: str = ""
    undone: bool = False

    def line(self) -> str:
        return "\t".join(
            (
                self.id,
                str(self.time),
                self.user,
                self.peer,
                self.command.replace("\t", " "),
                str(self.messages),
                str(self.recipients),
                "undone" if self.undone else "",
            )
        )

    def fields(self) -> dict[str, str]:
        """The record kept in the postoffice's operation log (spool.opstate)."""
        return {
            "id": self.id,
            "time": str(self.time),
            "user": self.user,
            "peer": self.peer,
            "command": self.command,
            "verb": self.verb,
            "messages": str(self.messages),
            "recipients": str(self.recipients),
            "rule": self.rule,
        }

    @classmethod
    def from_fields(cls, f: dict[str, str]) -> Operation | None:
        try:
            return cls(
                f["id"],
                int(f.get("time", "0")),
                f.get("user", "-"),
                f.get("peer", ""),
                f.get("command", ""),
                f["verb"],
                int(f.get("messages", "0")),
                int(f.get("recipients", "0")),
                rule=f.get("rule", ""),
                undone=f.get("undone") == "1",
            )
        except (KeyError, ValueError):
            return None


@dataclass(slots=True)
class _Token:
    user: str
    command: str
    expires: int
    sids: tuple[str, ...]


@dataclass(slots=True)
class OperatorState:
    """Recent operations and outstanding confirmation tokens of one server."""

    ops: deque[Operation] = field(default_factory=lambda: deque(maxlen=OPS_KEPT))
    tokens: dict[str, _Token] = field(default_factory=dict)
    counter: int = 0
    loaded: bool = False
    saving: set[asyncio.Task[None]] = field(default_factory=set)

    def load(self, plane: ControlPlane | None) -> OperatorState:
        """Once: the operations the postoffice kept (they survive restarts)."""
        if self.loaded or plane is None:
            return self
        self.loaded = True
        old = [o for o in map(Operation.from_fields, plane.load_ops()) if o]
        self.ops.extendleft(reversed(old[-OPS_KEPT:]))
        # new ids never repeat one the postoffice still names: logged operations, and
        # those a crash kept from the log but not from the trash or the holds file
        for op in [o.id for o in old] + plane.op_ids_in_use():
            tail = op.rpartition("-")[2]
            if tail.isdigit():
                self.counter = max(self.counter, int(tail))
        return self

    def new_op_id(self, now: int) -> str:
        self.counter += 1
        return f"O{now}-{self.counter}"

    def find(self, op: str) -> Operation | None:
        for o in self.ops:
            if o.id == op:
                return o
        return None


# -- target parsing ---------------------------------------------------------------------


@dataclass(slots=True)
class Target:
    kind: str  # id | thread | where
    ident: str = ""
    channel: str = ""
    host: str = ""
    flt: Filter | None = None
    rest: str = ""  # the words after the target (reason, AT ...)
    confirm: str = ""
    command: str = ""  # the command without CONFIRM, as the token binds it


class BadTarget(ValueError):
    pass


def parse_target(verb: str, text: str) -> Target:
    words = text.split()
    confirm = ""
    if len(words) >= 2 and words[-2] == "CONFIRM":
        confirm = words[-1]
        words = words[:-2]
    command = " ".join([verb, *words])
    if not words:
        raise BadTarget(
            f"-{verb} needs a target: <id>, THREAD <channel> <host> or WHERE <filter>"
        )
    head = words[0]
    if head == "THREAD":
        if len(words) < 3:
            raise BadTarget(f"-{verb} THREAD needs <channel> <host>")
        return Target(
            "thread",
            channel=words[1].lower(),
            host=words[2].lower(),
            rest=" ".join(words[3:]),
            confirm=confirm,
            command=command,
        )
    if head == "WHERE":
        body = text.split("WHERE", 1)[1]
        if confirm:
            body = body.rsplit("CONFIRM", 1)[0]
        terms = split_terms(body)
        n = 0
        while n < len(terms) and (
            terms[n].upper() == "AND" or _TERM_WORD.match(terms[n])
        ):
            n += 1
        if n == 0:
            raise BadTarget(f"-{verb} WHERE needs a filter (like host=*.example)")
        flt = parse_filter(" ".join(_quote(t) for t in terms[:n]))
        return Target(
            "where", flt=flt, rest=" ".join(terms[n:]), confirm=confirm, command=command
        )
    return Target(
        "id", ident=head, rest=" ".join(words[1:]), confirm=confirm, command=command
    )


def _quote(term: str) -> str:
    if " " in term or "\t" in term or '"' in term:
        m = _TERM_WORD.match(term)
        if m:
            key_op, value = term[: m.end()], term[m.end() :]
            return key_op + '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return term


# -- helpers ----------------------------------------------------------------------------


def _st(svc: Service) -> OperatorState:
    return svc.opstate.load(svc.control)


def _audit(client: Client, fmt: str, *args: object) -> None:
    audit.info("user=%s peer=%s " + fmt, client.user, client.peer, *args)


SLICE = 0.002  # seconds of work before yielding to the event loop (a new session
# needs a few loop turns to get its greeting out: they add up)
CHUNK = {"HOLD": 100, "RELEASE": 100, "RETRY": 200, "BOUNCE": 50, "DELETE": 25}
CHUNK_TIME = 0.001  # seconds one chunk should take (the size adapts)
CHUNK_MIN = 5
CHUNK_MAX = 2000


async def _collect(items: Iterable[T | None]) -> list[T]:
    """Drain an iterator (None items are ticks), yielding to the loop every
    :data:`SLICE` seconds."""
    out: list[T] = []
    clock = time.perf_counter
    started = clock()
    for item in items:
        if item is not None:
            out.append(item)
        if clock() - started >= SLICE:
            await asyncio.sleep(0)
            started = clock()
    return out


async def _targets(plane: ControlPlane, t: Target) -> list[tuple[str, int]] | str:
    """(spool-id, recipients) of a target, or a ``-`` reply text."""
    if t.kind == "id":
        sid = plane.resolve(t.ident)
        if sid is None and t.ident.startswith("<"):
            sid = await plane.find_message_id(t.ident)
        if sid is None:
            return NO_SUCH_MESSAGE
        detail = plane.detail(sid)
        return [(sid, detail.row.rcpts if detail else 0)]
    if t.kind == "thread":
        return await _collect(plane.thread_targets(t.channel, t.host))
    assert t.flt is not None
    return await _collect(plane.filter_targets(t.flt))


async def _guarded(
    svc: Service, client: Client, t: Target, now: int
) -> tuple[list[str], int] | Reply:
    """The spool-ids to act on, or the preview / an error reply."""
    plane = svc.control
    assert plane is not None
    st = _st(svc)
    for tok, old in list(st.tokens.items()):
        if old.expires < now:
            del st.tokens[tok]
    if t.kind != "id" and t.confirm:
        entry = st.tokens.get(t.confirm)
        if (
            entry is None
            or entry.command != t.command
            or entry.user != (client.user or "")
        ):
            return Reply(
                f"-CONFIRM {t.confirm[:20]} is unknown, expired or for another command;"
                " send the command again for a new preview"
            )
        del st.tokens[t.confirm]
        return list(entry.sids), -1
    got = await _targets(plane, t)
    if isinstance(got, str):
        return Reply(got)
    if t.kind == "id":
        return [s for s, _ in got], sum(n for _, n in got)
    sids = tuple(s for s, _ in got)
    rcpts = sum(n for _, n in got)
    token = secrets.token_hex(6)
    st.tokens[token] = _Token(client.user or "", t.command, now + TOKEN_LIFETIME, sids)
    first = " ".join(sids[:PREVIEW_IDS]) or "-"
    return Reply(
        f"+OK preview: {len(sids)} messages, {rcpts} recipients; first {first};"
        f" repeat within {TOKEN_LIFETIME}s with CONFIRM {token}"
    )


def _record(
    svc: Service,
    client: Client,
    now: int,
    verb: str,
    command: str,
    counts: tuple[int, int],
    sids: Sequence[str] = (),
    rule: str = "",
    op: str = "",
) -> Operation:
    st = _st(svc)
    o = Operation(
        op or st.new_op_id(now),
        now,
        client.user or "-",
        str(client.peer),
        command,
        verb,
        counts[0],
        counts[1],
        tuple(sids),
        rule,
    )
    st.ops.append(o)
    _persist(svc, st, o)
    _audit(
        client,
        "OP %s %r result=%d messages %d recipients",
        o.id,
        command,
        o.messages,
        o.recipients,
    )
    return o


def _persist(svc: Service, st: OperatorState, o: Operation) -> None:
    """Write the operation into the postoffice's log, off the loop and in order (the
    plane serialises its writes); an acting reply awaits it (:func:`_saved`)."""
    plane = svc.control
    if plane is None:
        return
    sids = o.sids if o.verb == "RELEASE" else ()  # what UNDO needs after a restart
    task = asyncio.get_running_loop().create_task(plane.save_op(o.fields(), sids))
    st.saving.add(task)
    task.add_done_callback(st.saving.discard)


async def _saved(svc: Service) -> None:
    """Wait until the operation log has what was recorded so far."""
    pending = list(svc.opstate.saving)
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)


def _needs(client: Client, right: Right) -> bool:
    return bool(client.rights & right)


Handler = Callable[["Service", "Client", str, int], "ServerReply | Deferred"]


# -- acting commands -------------------------------------------------------------------


def _act(verb: str) -> Handler:
    def handler(
        svc: Service, client: Client, rest: str, now: int
    ) -> ServerReply | Deferred:
        if not _needs(client, Right.CONTROL) or svc.control is None:
            return svc._unknown(client, verb, rest)
        try:
            t = parse_target(verb, rest)
        except FilterError as exc:
            return Reply(f"-{exc}")
        except BadTarget as exc:
            return Reply(str(exc))
        when = now
        if verb == "RETRY" and t.rest:
            at, _, when_text = t.rest.partition(" ")
            if at != "AT" or not when_text:
                return Reply("-RETRY takes AT <time> after the target")
            try:
                when = parse_time(when_text.strip(), now)
            except ValueError as exc:
                return Reply(f"-{exc}")

        async def run() -> ServerReply:
            got = await _guarded(svc, client, t, now)
            if not isinstance(got, tuple):
                return got
            return await _perform(svc, client, verb, t, got[0], when, now)

        return Deferred(run)

    return handler


async def _chunked(
    verb: str, sids: list[str], act: Callable[[list[str]], tuple[int, int]]
) -> tuple[int, int]:
    """Act on ``sids`` chunk by chunk, yielding to the loop before a slice of
    :data:`SLICE` seconds would be overrun. Chunks start at :data:`CHUNK` messages and
    adapt so that one takes about :data:`CHUNK_TIME` (a message's cost varies with its
    recipients, a GC pass or a busy machine)."""
    size = CHUNK.get(verb, 200)
    msgs = rcpts = 0
    clock = time.perf_counter
    cpu = time.thread_time  # the chunk's own cost: a busy machine must not shrink it
    started = clock()
    i = 0
    while i < len(sids):
        t0 = cpu()
        m, r = act(sids[i : i + size])
        i += size
        msgs += m
        rcpts += r
        took = cpu() - t0
        if took > 0:  # at most halve or double at a time
            want = int(size * CHUNK_TIME / took)
            size = max(CHUNK_MIN, size // 2, min(CHUNK_MAX, size * 2, want))
        if clock() - started + took >= SLICE:
            await asyncio.sleep(0)
            started = clock()
    return msgs, rcpts


_DONE = {
    "HOLD": "held",
    "RELEASE": "released",
    "RETRY": "retry scheduled for",
    "DELETE": "deleted (into the trash)",
    "BOUNCE": "bounced",
}


def _action(
    plane: ControlPlane, verb: str, op: str, reason: str, when: int
) -> Callable[[list[str]], tuple[int, int]]:
    """The plane call of ``verb`` for one chunk of spool-ids (persisted afterwards)."""

    def hold(c: list[str]) -> tuple[int, int]:
        return plane.hold(c, reason or "held by operator", op, save=False)

    def release(c: list[str]) -> tuple[int, int]:
        return plane.release(c, op, save=False)

    def retry(c: list[str]) -> tuple[int, int]:
        return plane.retry(c, when)

    def delete(c: list[str]) -> tuple[int, int]:
        return plane.delete(c, op, save=False)

    def bounce(c: list[str]) -> tuple[int, int]:
        return plane.bounce(c, reason or "cancelled by the operator", save=False)

    return {
        "HOLD": hold,
        "RELEASE": release,
        "RETRY": retry,
        "DELETE": delete,
        "BOUNCE": bounce,
    }[verb]


async def _perform(
    svc: Service,
    client: Client,
    verb: str,
    t: Target,
    sids: list[str],
    when: int,
    now: int,
) -> ServerReply:
    plane = svc.control
    assert plane is not None
    op = _st(svc).new_op_id(now)
    act = _action(plane, verb, op, t.rest, when)
    what = _DONE[verb]
    counts = await _chunked(verb, sids, act)
    if verb != "RETRY":
        await plane.save()
    o = _record(svc, client, now, verb, t.command, counts, sids, op=op)
    await _saved(svc)
    at = f" at {when}" if verb == "RETRY" else ""
    return Reply(
        f"+OK op={o.id} {what} {counts[0]} messages ({counts[1]} recipients){at}"
    )


def _undo(svc: Service, client: Client, rest: str, now: int) -> ServerReply | Deferred:
    if not _needs(client, Right.CONTROL) or svc.control is None:
        return svc._unknown(client, "UNDO", rest)
    op_id, _ = split_word(rest.strip())
    if not op_id:
        return Reply("-UNDO needs an operation id (see SHOW OPS)")
    return Deferred(lambda: _undo_async(svc, client, op_id, now))


async def _undo_async(
    svc: Service, client: Client, op_id: str, now: int
) -> ServerReply:
    plane = svc.control
    assert plane is not None
    o = _st(svc).find(op_id)
    verb = o.verb if o is not None else ""
    if o is not None and o.undone:
        return Reply(f"-Operation {op_id} was already undone")
    counts: tuple[int, int]
    new_op = _st(svc).new_op_id(now)
    if verb == "HOLD" or (o is None and plane.held_by(op_id)):
        sids = plane.held_by(op_id)
        counts = await _chunked(
            "RELEASE", sids, lambda c: plane.release(c, new_op, save=False)
        )
        await plane.save()
    elif verb == "RELEASE" and o is not None:
        why = f"hold restored by UNDO {op_id}"
        sids = list(o.sids) or await plane.op_sids(op_id)  # after a restart: on disk
        counts = await _chunked(
            "HOLD", sids, lambda c: plane.hold(c, why, op_id, save=False)
        )
        await plane.save()
    elif verb in ("DELETE", ""):
        n = await plane.undelete(op_id)
        if n == 0 and o is None:
            return Reply(f"-No such operation {op_id[:40]} (see SHOW OPS)")
        counts = (n, 0)
    elif verb in ("SUSPEND", "POLICY") and o is not None:
        plane.remove_rule(o.rule)
        counts = (0, 0)
    else:
        return Reply(f"-UNDO of {verb or 'this operation'} is not supported")
    if o is not None:
        o.undone = True
    new = _record(svc, client, now, "UNDO", f"UNDO {op_id}", counts, op=new_op)
    if o is not None:
        await plane.mark_undone(o.id)
    await _saved(svc)
    return Reply(f"+OK op={new.id} undid {op_id}: {counts[0]} messages")


# -- reading commands ------------------------------------------------------------------


def show_msgs(
    svc: Service, client: Client, args: str, now: int
) -> ServerReply | Deferred:
    plane = svc.control
    if plane is None or not _needs(client, Right.MSGS):
        return svc._unknown(client, "SHOW", "MSGS")
    text = args.strip()
    flt = Filter()
    if text:
        word, rest = split_word(text)
        if word != "WHERE":
            return Reply("-SHOW MSGS takes WHERE <filter> or nothing")
        try:
            flt = parse_filter(rest)
        except FilterError as exc:
            return Reply(f"-{exc}")

    async def run() -> AsyncBody:
        assert plane is not None
        return AsyncBody(_msg_batches(plane, flt, now))

    return Deferred(run)


async def _msg_batches(
    plane: ControlPlane, flt: Filter, now: int
) -> AsyncIterator[list[str]]:
    """Rows in batches: a batch goes out when it is full or a slice of time is over."""
    batch: list[str] = []
    clock = time.perf_counter
    started = clock()
    for row in plane.rows(flt):
        if row is not None:
            batch.append(row.line(now))
        if len(batch) >= 256 or clock() - started >= SLICE:
            if batch:
                yield batch
                batch = []
            await asyncio.sleep(0)
            started = clock()
    if batch:
        yield batch


def show_msg(
    svc: Service, client: Client, args: str, now: int
) -> ServerReply | Deferred:
    plane = svc.control
    if plane is None or not _needs(client, Right.MSGS):
        return svc._unknown(client, "SHOW", "MSG")
    ident, _ = split_word(args.strip())
    sid = plane.resolve(ident) if ident else None
    if sid is None and ident.startswith("<"):

        async def by_message_id() -> ServerReply:
            assert plane is not None
            found = await plane.find_message_id(ident)
            return _msg_reply(plane, found)

        return Deferred(by_message_id)
    return _msg_reply(plane, sid)


def _msg_reply(plane: ControlPlane, sid: str | None) -> ServerReply:
    detail = plane.detail(sid) if sid else None
    if detail is None:
        return Reply(NO_SUCH_MESSAGE)
    r = detail.row
    lines = [
        f"spool-id:\t{r.sid}",
        f"file:\t{r.path}",
        f"message-id:\t{detail.message_id}",
        f"sender:\t{r.sender or '<>'}",
        f"size:\t{r.size}",
        f"arrival:\t{r.arrival}",
        f"state:\t{r.state}",
    ]
    if detail.hold is not None:
        since, op, reason = detail.hold
        lines.append(f"hold:\t{since}\t{op}\t{reason}")
    lines.extend(
        "\t".join(
            (
                "rcpt:",
                rc.channel,
                rc.host,
                rc.address,
                rc.status,
                str(rc.attempts),
                str(rc.next_retry),
                str(rc.expiry),
                rc.diagnostic.replace("\r", " ").replace("\n", " "),
            )
        )
        for rc in detail.recipients
    )
    return MultilineReply(lines)


def show_ops(svc: Service, client: Client, args: str, now: int) -> ServerReply:
    if not _needs(client, Right.CONTROL | Right.RULES):
        return svc._unknown(client, "SHOW", "OPS")
    return MultilineReply([o.line() for o in _st(svc).ops])


def show_rules(kind: str, word: str) -> Handler:
    def handler(svc: Service, client: Client, args: str, now: int) -> ServerReply:
        plane = svc.control
        if plane is None or not _needs(client, Right.TT | Right.RULES):
            return svc._unknown(client, "SHOW", word)
        return MultilineReply(
            [
                "\t".join(
                    (
                        r.id,
                        r.selector,
                        str(r.until),
                        r.limits,
                        r.reason,
                        r.user,
                        str(r.created),
                    )
                )
                for r in plane.rules(kind)
            ]
        )

    return handler


def show_shape(
    svc: Service, client: Client, args: str, now: int
) -> ServerReply | Deferred:
    plane = svc.control
    if plane is None or not _needs(client, Right.QQ | Right.TT):
        return svc._unknown(client, "SHOW", "QUEUE")
    words = args.split()
    by, top = "host", 20
    i = 0
    while i < len(words):
        w = words[i]
        if w == "BY" and i + 1 < len(words):
            by = words[i + 1].lower()
            i += 2
        elif w == "TOP" and i + 1 < len(words) and words[i + 1].isdigit():
            top = int(words[i + 1])
            i += 2
        else:
            return Reply(f"-SHOW QUEUE SHAPE: unexpected {w[:40]!r}")
    if by not in ("host", "domain", "sender-domain", "channel"):
        return Reply("-SHOW QUEUE SHAPE BY host|domain|sender-domain|channel")
    if by == "sender-domain" and not _needs(client, Right.MSGS):
        return Reply("-SHOW QUEUE SHAPE BY sender-domain needs the MSGS right")

    async def run() -> ServerReply:
        assert plane is not None
        return MultilineReply(await plane.shape(by, top))

    return Deferred(run)


def _explain(svc: Service, client: Client, rest: str, now: int) -> ServerReply:
    plane = svc.control
    if plane is None or not _needs(client, Right.TT):
        return svc._unknown(client, "EXPLAIN", rest)
    words = rest.split()
    lines: list[str] | None
    if len(words) == 3 and words[0] == "THREAD":
        lines = plane.explain_thread(words[1].lower(), words[2].lower())
        missing = "-No such thread."
    elif len(words) == 2 and words[0] == "MSG" and _needs(client, Right.MSGS):
        sid = plane.resolve(words[1])
        lines = plane.explain_msg(sid) if sid else None
        missing = NO_SUCH_MESSAGE
    else:
        return Reply("-EXPLAIN THREAD <channel> <host> | EXPLAIN MSG <id>")
    return Reply(missing) if lines is None else MultilineReply(lines)


# -- rules -----------------------------------------------------------------------------


def _selector(text: str) -> tuple[str, str] | None:
    channel, slash, host = text.partition("/")
    if not slash or not channel or not host:
        return None
    return channel.lower(), host.lower()


def _suspend(svc: Service, client: Client, rest: str, now: int) -> ServerReply:
    plane = svc.control
    if plane is None or not _needs(client, Right.RULES):
        return svc._unknown(client, "SUSPEND", rest)
    words = rest.split()
    sel = _selector(words[0]) if words else None
    if sel is None:
        return Reply("-SUSPEND <channel>/<host-glob> [FOR <duration>] [reason]")
    until = 0
    words = words[1:]
    if len(words) >= 2 and words[0] == "FOR":
        try:
            until = now + parse_duration(words[1])
        except ValueError as exc:
            return Reply(f"-{exc}")
        words = words[2:]
    op = _st(svc).new_op_id(now)
    rid = "R" + op[1:]
    reason = " ".join(words) or "suspended by operator"
    row = RuleRow(
        rid, "suspend", f"{sel[0]}/{sel[1]}", until, reason, "", now, client.user or "-"
    )
    plane.add_rule(row, {})
    _record(
        svc, client, now, "SUSPEND", "SUSPEND " + rest.strip(), (0, 0), rule=rid, op=op
    )
    return Reply(f"+OK op={op} rule={rid} suspended {row.selector}")


def _resume(svc: Service, client: Client, rest: str, now: int) -> ServerReply:
    plane = svc.control
    if plane is None or not _needs(client, Right.RULES):
        return svc._unknown(client, "RESUME", rest)
    rid, _ = split_word(rest.strip())
    row = plane.remove_rule(rid) if rid else None
    if row is None or row.kind != "suspend":
        return Reply("-No such suspension (see SHOW SUSPENDS)")
    o = _record(svc, client, now, "RESUME", f"RESUME {rid}", (0, 0), rule=rid)
    return Reply(f"+OK op={o.id} resumed {row.selector}")


def _policy(svc: Service, client: Client, rest: str, now: int) -> ServerReply:
    plane = svc.control
    if plane is None or not _needs(client, Right.RULES):
        return svc._unknown(client, "POLICY", rest)
    word, args = split_word(rest)
    if word == "DELETE":
        rid, _ = split_word(args.strip())
        row = plane.remove_rule(rid) if rid else None
        if row is None or row.kind != "policy":
            return Reply("-No such policy (see SHOW POLICIES)")
        o = _record(
            svc, client, now, "POLICY-DELETE", f"POLICY DELETE {rid}", (0, 0), rule=rid
        )
        return Reply(f"+OK op={o.id} deleted policy {rid}")
    if word != "SET":
        return Reply(
            "-POLICY SET <channel>/<host-glob> [maxthr=n] [maxring=n] [rate=n/<period>] [FOR <duration>] | POLICY DELETE <rule>"
        )
    words = args.split()
    sel = _selector(words[0]) if words else None
    if sel is None:
        return Reply("-POLICY SET needs <channel>/<host-glob>")
    fields: dict[str, str] = {}
    until = 0
    i = 1
    try:
        while i < len(words):
            w = words[i]
            if w == "FOR" and i + 1 < len(words):
                until = now + parse_duration(words[i + 1])
                i += 2
                continue
            key, eq, value = w.partition("=")
            if not eq or key not in ("maxthr", "maxring", "rate"):
                return Reply(f"-POLICY SET: unexpected {w[:40]!r}")
            if key == "rate":
                n, slash, per = value.partition("/")
                if not n.isdigit() or not slash:
                    return Reply("-rate is n/<period>, like 100/1m")
                fields["rate"] = n
                fields["period"] = str(
                    parse_duration(per if per[:1].isdigit() else "1" + per)
                )
            elif value.isdigit() and int(value) > 0:
                fields[key] = value
            else:
                return Reply(f"-{key} is a positive number")
            i += 1
    except ValueError as exc:
        return Reply(f"-{exc}")
    if not fields:
        return Reply("-POLICY SET needs maxthr=, maxring= or rate=")
    op = _st(svc).new_op_id(now)
    rid = "P" + op[1:]
    limits = " ".join(f"{k}={v}" for k, v in fields.items() if k != "period") + (
        f"/{fields['period']}s" if "period" in fields else ""
    )
    row = RuleRow(
        rid, "policy", f"{sel[0]}/{sel[1]}", until, "", limits, now, client.user or "-"
    )
    plane.add_rule(row, fields)
    _record(
        svc, client, now, "POLICY", "POLICY " + rest.strip(), (0, 0), rule=rid, op=op
    )
    return Reply(f"+OK op={op} rule={rid} policy {row.selector} {limits}")


# -- KILL THREAD guard -----------------------------------------------------------------


def kill_thread(svc: Service, client: Client, rest: str, now: int) -> Deferred | None:
    """``KILL THREAD ch host CONFIRM`` (the preview) and ``... CONFIRM <token>`` (acts);
    None for everything else, which the caller answers as before (a plain ``KILL
    THREAD`` gets ZMailer's ``-Unknown request.`` and deletes nothing)."""
    plane = svc.control
    words = rest.split()
    if plane is None or len(words) not in (4, 5) or words[0] != "THREAD":
        return None
    if words[3] != "CONFIRM":
        return None
    svc.count("CommandKillThr")
    t = Target(
        "thread",
        channel=words[1].lower(),
        host=words[2].lower(),
        confirm=words[4] if len(words) == 5 else "",
        command=" ".join(["KILL", *words[:3]]),
    )

    async def run() -> ServerReply:
        if (
            not t.confirm
            and next(iter(plane.thread_targets(t.channel, t.host)), None) is None
        ):
            return Reply(replies.KILL_NO_SUCH_THREAD)
        result = await _guarded(svc, client, t, now)
        if isinstance(result, Reply):
            if result.text.startswith("+OK preview"):
                # a '-' line: nothing was removed; KILL's extra empty line (B2 keep)
                return Reply("-Not done: " + result.text.removeprefix("+OK ") + "\n")
            return Reply(result.text + "\n")
        n = plane.kill_thread(t.channel, t.host)
        o = _record(svc, client, now, "KILL", t.command, (len(result[0]), n))
        return Reply(f"+OK; KILLed something. op={o.id}\n")

    return Deferred(run)


TABLE: dict[str, Handler] = {
    "HOLD": _act("HOLD"),
    "RELEASE": _act("RELEASE"),
    "RETRY": _act("RETRY"),
    "BOUNCE": _act("BOUNCE"),
    "DELETE": _act("DELETE"),
    "UNDO": _undo,
    "EXPLAIN": _explain,
    "SUSPEND": _suspend,
    "RESUME": _resume,
    "POLICY": _policy,
}

SHOW_TABLE: dict[str, Handler] = {
    "MSG": show_msg,
    "MSGS": show_msgs,
    "OPS": show_ops,
    "SUSPENDS": show_rules("suspend", "SUSPENDS"),
    "POLICIES": show_rules("policy", "POLICIES"),
}

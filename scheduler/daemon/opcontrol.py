"""The daemon's side of operator control: the :class:`~mailq.server.opviews.ControlPlane`
over the scheduler core, the runner and the postoffice (docs/protocol.md).

Holds and rules live in the postoffice (:mod:`spool.opstate`) and are written before a
command answers; at startup :func:`ControlPlaneImpl.restore` hands them to the core and
finishes trash moves that a crash interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path

from mailq.server.opviews import MessageDetail, MessageRow, RecipientRow, RuleRow
from scheduler.core.control import HoldInfo, Rule, message_state, vertex_state
from scheduler.core.events import MessageGone
from scheduler.core.model import Message
from scheduler.core.scheduler import Scheduler
from scheduler.core.shape import ShapeTable
from scheduler.daemon.deliveries import DeliveryTap
from scheduler.daemon.prefetch import Prefetch, read_hinted
from scheduler.daemon.runner import Runner
from spool import opstate
from spool.controlfile import parse
from spool.errors import SpoolError
from spool.filters import Filter, index_key, text_searchable
from spool.ids import parse_spool_id
from spool.layout import Postoffice

__all__ = ["ControlPlaneImpl"]

logger = logging.getLogger(__name__)

TRASH_DAYS = 7
SLICE = 0.002  # seconds of work between yields to the event loop (as opctl.SLICE)
INDEX_BUDGET = 4  # recipient index segments compacted per tick (~1 ms each)
SHAPE_CHUNK = 2048  # (thread, count) pairs added between two looks at the clock
TICK = 64  # messages tested between the None ticks of a scan (see Control.select)
_MSGID = re.compile(rb"(?im)^message-id:[ \t]*(<[^>\r\n]*>)")


class ControlPlaneImpl:
    """Operator commands against one running scheduler."""

    def __init__(
        self,
        core: Scheduler,
        runner: Runner,
        po: Postoffice,
        clock: Callable[[], float] = time.time,
        trash_days: float = TRASH_DAYS,
        tap: DeliveryTap | None = None,
    ) -> None:
        self.tap = tap  # WATCH sees holds and releases through it
        self.core = core
        self.runner = runner
        self.po = po
        self.clock = clock
        self.trash_days = trash_days
        self._rules: dict[str, tuple[RuleRow, dict[str, str]]] = {}
        self._transport = os.fspath(po.transport) + "/"
        self._save_lock = asyncio.Lock()
        self._ops_lock = asyncio.Lock()

    # -- startup ---------------------------------------------------------------------------

    def restore(self) -> None:
        root = self.po.root
        fixed = opstate.recover_trash(root)
        if fixed:
            logger.warning("finished %d interrupted trash moves", fixed)
        gone = opstate.purge_trash(root, self.clock() - self.trash_days * 86400)
        if gone:
            logger.info("purged %d old trash operations", len(gone))
        self.core.restore_holds(opstate.read_holds(root))
        for fields in opstate.read_rules(root):
            row = RuleRow(
                fields["id"],
                fields["kind"],
                fields.get("selector", "*/*"),
                int(fields.get("until", "0") or 0),
                fields.get("reason", ""),
                fields.get("limits", ""),
                int(fields.get("created", "0") or 0),
                fields.get("user", "-"),
            )
            self._rules[row.id] = (row, fields)
        self._push_rules()

    def tick(self) -> None:
        """Lift expired rules and compact the recipient index a little (called every
        few seconds by the daemon)."""
        self.core.compact_index(INDEX_BUDGET)
        self._expire()

    def _expire(self) -> None:
        now = int(self.clock())
        expired = [r.id for r, _ in self._rules.values() if r.until and r.until <= now]
        for rid in expired:
            logger.info("rule %s expired", rid)
            del self._rules[rid]
        if expired:
            self._save_rules()
            self._push_rules()

    # -- finding ---------------------------------------------------------------------------

    def _msg(self, sid: str) -> Message | None:
        try:
            number = parse_spool_id(sid)[0]
        except ValueError:
            return None
        msg = self.core.message(number)
        if msg is None or self.core.spool_id_of(msg) != sid:
            return None
        return msg

    def resolve(self, ident: str) -> str | None:
        msg = self.core.resolve(ident)
        return None if msg is None else self.core.spool_id_of(msg)

    def _message_id(self, msg: Message) -> str:
        return self._message_id_at(msg.relpath, msg.mid)

    def _message_id_at(self, relpath: str, mid: str) -> str:
        """The control file's ``l`` line (the Message-ID ZMailer's router logs), else
        the message file's ``Message-ID:`` header."""
        try:
            with open(self.po.control_path(relpath), "rb") as f:
                for line in f.read(4096).split(b"\n"):
                    if line.startswith(b"l <"):
                        return line[2:].strip().decode("utf-8", "surrogateescape")
        except OSError:
            pass
        path = self.po.message_path(relpath, mid)
        try:
            with open(path, "rb") as f:
                head = f.read(16384)
        except OSError:
            return ""
        head = head.split(b"\n\n", 1)[0]
        m = _MSGID.search(head)
        return m.group(1).decode("utf-8", "surrogateescape") if m else ""

    def _size(self, msg: Message) -> int:
        try:
            return os.stat(self.po.message_path(msg.relpath, msg.mid)).st_size
        except OSError:
            return 0

    def _reader(
        self, flt: Filter, pre: Prefetch | None = None
    ) -> Callable[[Message], list[tuple[str, str, str]]]:
        hints = _hints(flt)
        return lambda msg: self._addresses(msg, hints, pre)

    def _prefetch(self, flt: Filter) -> Prefetch | None:
        """A reader thread for a scan of every loaded message's control file (a
        ``rcpt`` term the index cannot answer, ``rcpt!=`` or ``rcpt!~``, and no
        ``channel``/``host``/``state`` term to narrow the candidates); None
        otherwise."""
        terms = flt.terms
        if not flt.needs_addresses or any(
            index_key(t) is not None or text_searchable(t) for t in terms
        ):
            return None
        if any(t.key in ("channel", "host", "state") for t in terms):
            return None
        msgs = list(self.core.messages())  # the scan's order (Control._candidates)
        return Prefetch(self._transport, msgs, _hints(flt))

    def _addresses(
        self,
        msg: Message,
        hints: Sequence[bytes] = (),
        pre: Prefetch | None = None,
    ) -> list[tuple[str, str, str]]:
        """Pending recipients' (channel, host, address) from the control file; with
        ``hints`` (lower-case literal parts of a pattern) a file that lacks one of
        them is skipped without parsing. ``pre`` may have read it already."""
        data = pre.take(msg.relpath) if pre is not None else None
        if data is None:
            data = read_hinted(self._transport + msg.relpath, hints)
        if not data:
            return []
        try:
            cf = parse(data, msg.relpath)
        except SpoolError:
            return []
        return [
            (r.channel.lower(), r.host.lower(), r.user)
            for r in cf.recipients
            if r.status == " "
        ]

    def _row(self, msg: Message) -> MessageRow:
        info = self.core.hold_info(msg.number)
        dests = []
        rcpts = 0
        for v, channel, host in self.core.destinations(msg, info):
            dests.append(f"{channel}/{host}")
            rcpts += len(v.offsets)
        return MessageRow(
            self.core.spool_id_of(msg),
            msg.relpath,
            message_state(msg, info is not None),
            msg.mtime,
            self._size(msg),
            msg.sender,
            rcpts,
            tuple(dests),
        )

    def _selected(self, flt: Filter) -> Generator[Message | None, None, None]:
        """The loaded messages ``flt`` selects, in slices (None between two); the
        control files are read ahead on a thread when the filter needs every one."""
        now = self.clock()
        pre = self._prefetch(flt)
        try:
            reader = self._reader(flt, pre)
            yield from self.core.select(flt, now, reader, self._size, TICK)
        finally:
            if pre is not None:
                pre.close()

    def rows(self, flt: Filter) -> Iterator[MessageRow | None]:
        with contextlib.closing(self._selected(flt)) as selected:  # stops its reader
            for msg in selected:
                if msg is None:
                    yield None
                elif msg.live or self.core.hold_info(msg.number) is not None:
                    yield self._row(msg)

    def detail(self, sid: str) -> MessageDetail | None:
        msg = self._msg(sid)
        if msg is None:
            return None
        info = self.core.hold_info(msg.number)
        by_offset = {}
        for v, channel, host in self.core.destinations(msg, info):
            th = v.thread
            clause = self.core._clause_for(channel, host)
            expiry = msg.mtime + clause.expiry if clause.expiry > 0 else 0
            for off in v.offsets:
                by_offset[off] = (v, th, expiry, vertex_state(v, info is not None))
        rcpts: list[RecipientRow] = []
        try:
            with open(self.po.control_path(msg.relpath), "rb") as f:
                cf = parse(f.read(), msg.relpath)
            recipients = cf.recipients
        except (OSError, SpoolError):
            recipients = []
        for r in recipients:
            got = by_offset.get(r.offset)
            if got is None:
                status = {"-": "failed", "+": "delivered"}.get(r.status, "done")
                rcpts.append(
                    RecipientRow(r.channel, r.host, r.user, status, 0, 0, 0, "")
                )
                continue
            v, th, expiry, state = got
            rcpts.append(
                RecipientRow(
                    r.channel.lower(),
                    r.host.lower(),
                    r.user,
                    state,
                    v.attempts,
                    th.wakeup if th is not None else 0,
                    expiry,
                    v.message or "",
                )
            )
        hold = None if info is None else (info.since, info.op, info.reason)
        return MessageDetail(self._row(msg), self._message_id(msg), hold, rcpts)

    def thread_targets(self, channel: str, host: str) -> Iterator[tuple[str, int]]:
        th = self.core.find_thread(channel, host)
        if th is None:
            return
        for v in list(th.vertices()):
            yield self.core.spool_id_of(v.msg), len(v.offsets)

    def filter_targets(self, flt: Filter) -> Iterator[tuple[str, int] | None]:
        with contextlib.closing(self._selected(flt)) as selected:
            for msg in selected:
                if msg is None:
                    yield None
                    continue
                info = self.core.hold_info(msg.number)
                dests = self.core.destinations(msg, info)
                n = sum(len(v.offsets) for v, _c, _h in dests)
                if n:
                    yield self.core.spool_id_of(msg), n

    async def find_message_id(self, message_id: str) -> str | None:
        msgs = [(m, m.relpath, m.mid) for m in list(self.core.messages())]
        found = await asyncio.to_thread(self._scan_message_ids, msgs, message_id)
        return None if found is None else self.core.spool_id_of(found)

    def _scan_message_ids(
        self, msgs: list[tuple[Message, str, str]], message_id: str
    ) -> Message | None:
        for msg, relpath, mid in msgs:
            if self._message_id_at(relpath, mid) == message_id:
                return msg
        return None

    def _msgs(self, sids: Sequence[str]) -> list[Message]:
        return [m for m in (self._msg(s) for s in sids) if m is not None]

    @staticmethod
    def _rcpts(msgs: Sequence[Message]) -> int:
        return sum(len(v.offsets) for m in msgs for v in m.vertices)

    # -- acting ----------------------------------------------------------------------------

    def _save_holds(self) -> None:
        holds = self.core.held_numbers()
        opstate.write_holds(
            self.po.root,
            [(i.sid, i.since, i.op, i.reason) for i in holds.values()],
        )

    async def save(self) -> None:
        """Write the holds file from a snapshot taken in slices, off the loop; saves
        run one at a time so that a later snapshot is never overwritten by an older."""
        async with self._save_lock:
            infos = list(self.core.held_numbers().values())
            rows: list[tuple[str, int, str, str]] = []
            for i in range(0, len(infos), 5000):
                rows.extend(
                    (h.sid, h.since, h.op, h.reason) for h in infos[i : i + 5000]
                )
                await asyncio.sleep(0)
            await asyncio.to_thread(opstate.write_holds, self.po.root, rows)

    def hold(
        self, sids: Sequence[str], reason: str, op: str, *, save: bool = True
    ) -> tuple[int, int]:
        done, cmds = self.core.hold(self._msgs(sids), reason, op, self.clock())
        self.runner.execute(cmds)
        if self.tap is not None and self.tap.watched:
            for m in done:
                info = self.core.hold_info(m.number)
                if info is not None:
                    detail = f"{op} {reason}".strip()
                    self.tap.hold_changed("held", info.sid, _places(m, info), detail)
        if save:
            self._save_holds()
        return len(done), self._rcpts(done)

    def release(
        self, sids: Sequence[str], op: str, *, save: bool = True
    ) -> tuple[int, int]:
        msgs = self._msgs(sids)
        watched = self.tap is not None and self.tap.watched
        before: dict[int, tuple[str, list[tuple[object, str, str]]]] = {}
        for m in msgs if watched else ():
            if (info := self.core.hold_info(m.number)) is not None:
                before[m.number] = (info.sid, _places(m, info))  # release clears it
        done, cmds = self.core.release(msgs, self.clock())
        if self.tap is not None and watched:
            for m in done:
                if m.number in before:
                    sid, places = before[m.number]
                    self.tap.hold_changed("released", sid, places, op)
        if save:
            self._save_holds()
        self.runner.execute(cmds)
        self.runner.poke()
        return len(done), self._rcpts(done)

    def held_by(self, op: str) -> list[str]:
        return [i.sid for i in self.core.held_numbers().values() if i.op == op]

    def retry(self, sids: Sequence[str], at: int) -> tuple[int, int]:
        msgs = self._msgs(sids)
        _threads, cmds = self.core.retry(msgs, at, self.clock())
        self.runner.execute(cmds)
        self.runner.poke()
        return len(msgs), self._rcpts(msgs)

    def bounce(
        self, sids: Sequence[str], reason: str, *, save: bool = True
    ) -> tuple[int, int]:
        msgs = self._msgs(sids)
        n, cmds = self.core.bounce(msgs, reason, self.clock())
        self.runner.execute(cmds)
        if save:
            self._save_holds()
        return len(msgs), n

    def delete(
        self, sids: Sequence[str], op: str, *, save: bool = True
    ) -> tuple[int, int]:
        msgs = self._msgs(sids)
        moved = 0
        rcpts = 0
        for msg in msgs:
            info = self.core.hold_info(msg.number)
            n = sum(len(v.offsets) for v, _c, _h in self.core.destinations(msg, info))
            if info is not None:
                self.runner.execute(self.core.release([msg], self.clock())[1])
            if not opstate.move_to_trash(self.po.root, op, msg.relpath, msg.mid):
                continue
            self.runner.execute(
                self.core.handle(MessageGone(msg.relpath, f"DELETE {op}"), self.clock())
            )
            moved += 1
            rcpts += n
        if save:
            self._save_holds()
        return moved, rcpts

    async def undelete(self, op: str) -> int:
        try:
            restored = await asyncio.to_thread(
                opstate.restore_from_trash, self.po.root, op
            )
        except (ValueError, OSError):
            return 0
        for relpath in restored:
            self.runner.notify(relpath)
        return len(restored)

    def kill_thread(self, channel: str, host: str) -> int:
        return self.runner.kill_thread(channel, host)

    # -- the operation log -------------------------------------------------------------------

    def load_ops(self) -> list[dict[str, str]]:
        try:
            return opstate.read_ops(self.po.root)
        except OSError as exc:
            logger.error("cannot read the operation log: %s", exc)
            return []

    async def save_op(self, fields: dict[str, str], sids: Sequence[str]) -> None:
        async with self._ops_lock:  # appends in the order the operations happened
            try:
                await asyncio.to_thread(self._write_op, fields, list(sids))
            except (OSError, ValueError) as exc:
                logger.error("cannot write the operation log: %s", exc)

    def _write_op(self, fields: dict[str, str], sids: list[str]) -> None:
        if sids:
            opstate.write_op_sids(self.po.root, fields["id"], sids)
        opstate.append_op(self.po.root, fields)

    def op_ids_in_use(self) -> list[str]:
        ids = {i.op for i in self.core.held_numbers().values()}
        try:  # the names only: counting a big trash would walk all of it
            ids.update(os.listdir(self.po.root / opstate.TRASH_DIR))
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.error("cannot list the trash: %s", exc)
        return sorted(ids)

    async def mark_undone(self, op: str) -> None:
        await self.save_op({"undone": op}, ())

    async def op_sids(self, op: str) -> list[str]:
        return await asyncio.to_thread(opstate.read_op_sids, self.po.root, op)

    # -- rules -----------------------------------------------------------------------------

    def _save_rules(self) -> None:
        rows = []
        for r, fields in self._rules.values():
            rows.append(
                {
                    "id": r.id,
                    "kind": r.kind,
                    "selector": r.selector,
                    "until": str(r.until),
                    "reason": r.reason,
                    "limits": r.limits,
                    "created": str(r.created),
                    "user": r.user,
                    **fields,
                }
            )
        opstate.write_rules(self.po.root, rows)

    def _push_rules(self) -> None:
        rules = []
        for r, fields in self._rules.values():
            channel, _, host = r.selector.partition("/")
            rules.append(
                Rule(
                    r.id,
                    r.kind,
                    channel,
                    host,
                    r.until,
                    r.reason,
                    int(fields.get("maxthr", "0") or 0),
                    int(fields.get("maxring", "0") or 0),
                    int(fields.get("rate", "0") or 0),
                    int(fields.get("period", "0") or 0),
                    r.created,
                    r.user,
                )
            )
        self.runner.execute(self.core.set_rules(rules, self.clock()))
        self.runner.poke()

    def add_rule(self, row: RuleRow, fields: dict[str, str]) -> None:
        self._rules[row.id] = (row, dict(fields))
        self._save_rules()
        self._push_rules()

    def remove_rule(self, rule_id: str) -> RuleRow | None:
        got = self._rules.pop(rule_id, None)
        if got is None:
            return None
        self._save_rules()
        self._push_rules()
        return got[0]

    def rules(self, kind: str) -> list[RuleRow]:
        self._expire()
        return [r for r, _ in self._rules.values() if r.kind == kind]

    # -- shape and explain -------------------------------------------------------------------

    async def shape(self, by: str, top: int) -> list[str]:
        """qshape's table: recipients by destination and age (minutes, geometric).

        By host, domain or channel it sums the core's histograms (per arrival minute,
        recipients per thread), kept from startup on, so the age of a recipient is known
        to the minute (the middle of its arrival minute). By sender-domain it walks the
        messages. Both in slices of :data:`SLICE`."""
        now = int(self.clock())
        table = ShapeTable(by, now)
        clock = time.perf_counter
        started = clock()
        if by == "sender-domain":
            for msg in list(self.core.messages()):
                key = msg.sender.rpartition("@")[2].lower() or "<>"
                n = sum(len(v.offsets) for v in msg.vertices if v.thread is not None)
                if n:
                    table.add(key, now - msg.mtime, n)
                if clock() - started >= SLICE:
                    await asyncio.sleep(0)
                    started = clock()
        else:
            ages = self.core.age_histograms()
            for minute in list(ages):
                counts = ages.get(minute)
                if counts is None:  # emptied while we yielded
                    continue
                items = list(counts.items())  # the loop may change counts meanwhile
                for i in range(0, len(items), SHAPE_CHUNK):
                    table.add_minute(minute, items[i : i + SHAPE_CHUNK])
                    if clock() - started >= SLICE:
                        await asyncio.sleep(0)
                        started = clock()
        return table.lines(top)

    def explain_thread(self, channel: str, host: str) -> list[str] | None:
        th = self.core.find_thread(channel, host)
        if th is None:
            return None
        c = th.group.clause
        now = int(self.clock())
        lines = [
            f"thread:\t{th.channel}/{th.host}",
            f"clause:\t{c.selector}\t{c.file}:{c.line}",
            f"limits:\tmaxta={c.maxta} maxchannel={c.maxchannel} maxring={c.maxring}"
            f" maxthr={c.maxthr}",
            f"counts:\tmessages={th.jobs} recipients={th.rcpts} agents={th.thrkids}"
            f" ring-agents={th.group.proc_count}",
            f"pending:\t{th.pending or '-'}",
            f"wakeup:\t{th.wakeup}"
            + (f" (in {th.wakeup - now}s)" if th.wakeup > now else ""),
        ]
        for kind in ("suspend", "policy"):
            rule = self.core.rule_for(th, kind)
            if rule is not None:
                lines.append(
                    f"rule:\t{rule.id}\t{kind}\t{rule.selector}\t{rule.reason}"
                )
        lines.append("now:\t" + _why(th.pending, th.thrkids, th.wakeup, now))
        t = max(th.wakeup, now)
        schedule = []
        for step in c.retries[:5] or (c.interval,):
            t += step
            schedule.append(str(t))
        lines.append("retries:\t" + " ".join(schedule))
        first = th.first_vertex()
        if first is not None:
            lines.append(f"expiry:\t{first.expiry}\texpiry2:\t{first.expiry2}")
            lines.append(f"diagnostic:\t{(first.message or '-').replace(chr(13), ' ')}")
        return lines

    def explain_msg(self, sid: str) -> list[str] | None:
        msg = self._msg(sid)
        if msg is None:
            return None
        info = self.core.hold_info(msg.number)
        lines = [f"message:\t{sid}\t{msg.relpath}"]
        if info is not None:
            lines.append(f"held:\tsince {info.since} by {info.op}: {info.reason}")
        for v, channel, host in self.core.destinations(msg, info):
            lines.append(
                f"destination:\t{channel}/{host}\t{vertex_state(v, info is not None)}"
            )
            if v.thread is not None:
                sub = self.explain_thread(channel, host) or []
                lines.extend("  " + line for line in sub[1:])
        return lines


def _why(pending: str, kids: int, wakeup: int, now: int) -> str:
    if kids:
        return "being delivered"
    if pending.startswith("Suspended"):
        return "suspended by a rule"
    if pending.startswith("Policy"):
        return "held back by a policy"
    if pending.startswith(">"):
        return f"waiting for a free agent ({pending[1:]})"
    if wakeup > now:
        return "waiting for its retry time"
    return "due now"


def _hints(flt: Filter) -> list[bytes]:
    """Literal parts that every matching control file must contain (lower case)."""
    out: list[bytes] = []
    for t in flt.terms:
        if t.key != "rcpt" or t.op not in ("=", "~"):
            continue
        text = (
            t.value.lower()
            if t.op == "~"
            else re.sub(r"\[[^]]*\]", "*", t.value.lower())
        )
        parts = re.split(r"[*?\[\]]", text) if t.op == "=" else [text]
        out.extend(p.encode("utf-8", "surrogateescape") for p in parts if p)
    return out


def trash_root(po: Postoffice) -> Path:
    return po.root / opstate.TRASH_DIR


def _places(msg: Message, info: HoldInfo) -> list[tuple[object, str, str]]:
    """Where a held message's recipients wait: its parked vertices, and the ones an
    agent still works on (parked when the agent gives them back)."""
    places: list[tuple[object, str, str]] = list(info.destinations())
    places += ((v, th.channel, th.host) for v in msg.vertices if (th := v.thread))
    return places

"""Renderers of the ``mailq`` command: pure functions from parsed replies to text.

Text modes reproduce the ZMailer client byte for byte (MQ2-REF 10.4, 10.5); the
additions (JSON Lines, monitoring-plugin check, Prometheus exposition) are documented
in ``docs/monitoring.md``. No I/O here: local spool facts come in as
:class:`LocalMessage` values through a lookup function.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from mailq.client.nagios import (
    CRITICAL,
    OK,
    STATE_NAMES,
    UNKNOWN,
    WARNING,
    CheckResult,
    Thresholds,
    check_unknown,
    evaluate_check,
)
from mailq.client.parse import QueueShort, Snmp, ThreadDetail, ThreadLine, ThreadRow
from spool.timefmt import saytime

__all__ = [
    "CRITICAL",
    "MALFORMED",
    "OK",
    "STATE_NAMES",
    "UNKNOWN",
    "WARNING",
    "CheckResult",
    "LocalMessage",
    "ServerMetrics",
    "Thresholds",
    "check_unknown",
    "evaluate_check",
    "json_line",
    "peek_control",
    "quad_at",
    "render_default",
    "render_prometheus",
    "render_status",
    "row_object",
    "thread_object",
]

MALFORMED = "Communication error! Malformed data entry!"


# -- local control files (verbose mode) -------------------------------------------


@dataclass(frozen=True)
class LocalMessage:
    """What ``-v`` reads locally for one spool path: the control file and the message file."""

    control: bytes
    message_size: int
    message_mtime: int

    @property
    def control_size(self) -> int:
        return len(self.control)

    @property
    def log_id(self) -> str | None:
        return peek_control(self.control, "l")


def peek_control(data: bytes, tag: str) -> str | None:
    """The value of the last ``<tag>`` line (value from byte 2), or None."""
    found: str | None = None
    key = tag.encode()
    for raw in data.split(b"\n"):
        if raw[:1] == key and len(raw) >= 2 and raw[1:2] != b"\n":
            found = raw[2:].decode("utf-8", "surrogateescape")
    return found


def _words(text: str) -> list[str]:
    """Split a quad: spaces separate, ``"..."`` quotes with ``\\`` escapes, ``-`` = empty."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] in " \t":
            i += 1
            continue
        if text[i] == '"':
            i += 1
            word: list[str] = []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                word.append(text[i])
                i += 1
            out.append("".join(word))
            i += 1
            continue
        j = i
        while j < n and text[j] not in " \t":
            j += 1
        out.append(text[i:j])
        i = j
    return out


def quad_at(data: bytes, offset: int) -> list[str] | None:
    """``[channel, host, user, privilege]`` of the recipient line at ``offset``.

    The quad starts at offset + 12 (status byte, 6-byte PID slot, 4-byte delay slot).
    None when the offset lies beyond the end of the file.
    """
    if offset < 0 or offset >= len(data):
        return None
    end = data.find(b"\n", offset)
    line = data[offset : end if end >= 0 else len(data)]
    return _words(line[12:].decode("utf-8", "surrogateescape"))


# -- default mode (terse and verbose) ----------------------------------------------


@dataclass(frozen=True)
class Rendered:
    """Text for stdout and complaints for stderr."""

    out: list[str]
    err: list[str]


def render_default(
    details: Iterable[ThreadDetail],
    now: int,
    *,
    verbose: bool = False,
    lookup: Callable[[str], LocalMessage | None] | None = None,
) -> Rendered:
    """The default listing: ``chan/host:`` then one entry per message (MQ2-REF 10.4)."""
    out: list[str] = []
    err: list[str] = []
    for detail in details:
        err.extend(MALFORMED for _ in detail.malformed)
        if not detail.rows:
            continue
        out.append(f"{detail.channel}/{detail.host}:\n")
        local: LocalMessage | None = None
        for row in detail.rows:
            if not verbose:
                if row.index == 0:
                    out.append(_terse(row, now))
                continue
            if row.index == 0:
                local = lookup(row.path) if lookup is not None else None
                out.extend(_verbose_head(row, now, local))
            out.extend(_verbose_rcpt(row, local))
    return Rendered(out, err)


def _expires(row: ThreadRow, now: int) -> str:
    return f"expires in {saytime(row.expiry - now)}"


def _terse(row: ThreadRow, now: int) -> str:
    return f"\t{row.path}: ({row.attempts} tries, {_expires(row, now)}) {row.message}\n"


def _verbose_head(row: ThreadRow, now: int, local: LocalMessage | None) -> list[str]:
    sender = row.sender or "<>"
    if local is None:
        return [
            f"\t{row.path}: ({row.attempts} tries, {_expires(row, now)})\n",
            f"\t  from\t{sender}\n",
        ]
    age = saytime(now - local.message_mtime)
    sizes = f"{local.control_size}+{local.message_size} bytes"
    lines = [
        f"\t{row.path}: ({row.attempts} tries, age {age}, {_expires(row, now)}, {sizes})\n"
    ]
    if local.log_id is not None:
        lines.append(f"\t  id\t{local.log_id}\n")
    lines.append(f"\t  from\t{sender}\n")
    return lines


def _verbose_rcpt(row: ThreadRow, local: LocalMessage | None) -> list[str]:
    lines: list[str] = []
    if local is not None:
        quad = quad_at(local.control, row.offset)
        if quad is None:
            lines.append(f"\t\tto-ptr bad; split[3]='{row.offset}'\n")
        else:
            lines.append(f"\t  to\t{quad[2] if len(quad) > 2 else ''}\n")
    lines.extend(f"\t  diag\t{part}\n" for part in row.diagnostic_parts)
    return lines


# -- -s status lines -----------------------------------------------------------------


@dataclass(frozen=True)
class SpoolStatus:
    """Counts and daemon states read from the postoffice (MQ2-REF 10.5)."""

    postoffice: str
    router_count: int
    router_state: str
    deferred_count: int
    transport_count: int
    transport_state: str
    queue_count: int


def _plural(n: int, one: str, many: str) -> str:
    return one if n == 1 else many


def render_status(st: SpoolStatus) -> list[str]:
    po = st.postoffice
    lines = [
        f"{st.router_count} {_plural(st.router_count, 'entry', 'entries')} in "
        f"{po}/router/ directory: {st.router_state}\n"
    ]
    if st.deferred_count > 0:
        lines.append(
            f"{st.deferred_count} {_plural(st.deferred_count, 'message', 'messages')} deferred\n"
        )
    lines.append(
        f"{st.transport_count} {_plural(st.transport_count, 'message', 'messages')} in "
        f"{po}/transport/ directory: {st.transport_state}\n"
    )
    if st.queue_count != st.transport_count:
        lines.append(
            f"{st.queue_count} {_plural(st.queue_count, 'message', 'messages')} in "
            f"{po}/queue/ directory\n"
        )
    return lines


# -- JSON Lines ------------------------------------------------------------------------


def json_line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": ")) + "\n"


def row_object(
    server: str,
    channel: str,
    host: str,
    row: ThreadRow,
    *,
    local: LocalMessage | None = None,
    verbose: bool = False,
    now: int = 0,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "type": "entry",
        "server": server,
        "channel": channel,
        "host": host,
    }
    obj["spool"] = row.path
    obj.update(
        index=row.index,
        sender=row.sender,
        offset=row.offset,
        expiry=row.expiry,
        wakeup=row.wakeup,
        lastfeed=row.lastfeed,
        attempts=row.attempts,
        state=row.state,
        diagnostic=row.message,
    )
    if verbose:
        quad = quad_at(local.control, row.offset) if local is not None else None
        obj["recipient"] = quad[2] if quad is not None and len(quad) > 2 else None
        obj["log_id"] = local.log_id if local is not None else None
        obj["size"] = (
            local.control_size + local.message_size if local is not None else None
        )
        obj["age"] = now - local.message_mtime if local is not None else None
    return obj


def _num(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text


def thread_object(server: str, t: ThreadLine) -> dict[str, Any]:
    """A THREADS2 line: ``W``/``QA`` in seconds, plain numbers as ints, others as sent."""
    obj: dict[str, Any] = {"type": "thread", "server": server, "channel": t.channel}
    obj["host"] = t.host
    for key, value in t.fields.items():
        obj[key] = _num(value)
    obj.update(N=t.n, R=t.r, A=t.a)
    if t.w is not None:
        obj["W"] = t.w
    if t.qa is not None:
        obj["QA"] = t.qa
    return obj


def snmp_object(server: str, snmp: Snmp, kind: str = "snmp") -> dict[str, Any]:
    return {"type": kind, "server": server, **asdict(snmp)}


def short_objects(server: str, short: QueueShort) -> list[dict[str, Any]]:
    objs: list[dict[str, Any]] = [
        {"type": "group", "server": server, **asdict(g)} for g in short.groups
    ]
    objs.append(snmp_object(server, short.totals, "totals"))
    return objs


# -- --check: mailq.client.nagios (re-exported here) -------------------------------------

# -- --prometheus ----------------------------------------------------------------------

_SNMP_METRICS: tuple[tuple[str, str, str, str], ...] = (
    ("kids", "transport_agents", "gauge", "Transport-agent processes (Kids)."),
    ("idle", "transport_agents_idle", "gauge", "Idle transport agents."),
    ("messages", "messages", "gauge", "Control files loaded in the scheduler (Msgs)."),
    ("threads", "threads", "gauge", "Threads (Thrds)."),
    (
        "vertices",
        "vertices",
        "gauge",
        "Message x destination vertices (Rcpnts: in SNMP).",
    ),
    ("uptime", "uptime_seconds", "gauge", "Scheduler uptime in seconds."),
    ("messages_in", "messages_received_total", "counter", "Messages received."),
    ("messages_out", "messages_transmitted_total", "counter", "Messages done."),
    ("messages_stored", "messages_stored", "gauge", "Stored messages gauge."),
    ("recipients_in", "recipients_received_total", "counter", "Recipients received."),
    ("recipients_out", "recipients_transmitted_total", "counter", "Recipients done."),
    ("recipients_stored", "recipients_stored", "gauge", "Stored recipients gauge."),
)

_NOT_A_METRIC = re.compile(r"(PID|Time|time)$|^Time_now$")
STATS_PREFIX = "zmailer_mailq_stats_"


def _metric_name(counter: str) -> tuple[str, str, int] | None:
    """``SC.StoredMessages-G`` -> (``zmailer_mailq_stats_sc_storedmessages``, gauge, 1);
    kB become bytes (``SC.ReceivedVolume-kB`` -> ``..._receivedvolume_bytes_total``,
    scale 1024); None for PIDs and clock readings (``...PID``, ``...Time``,
    ``Time_now``), which are not metrics."""
    gauge = counter.endswith("-G")
    base = counter[:-2] if gauge else counter
    if _NOT_A_METRIC.search(base):
        return None
    scale = 1
    if base.endswith("-kB"):
        base, scale = base[:-3] + "-bytes", 1024
    name = STATS_PREFIX + re.sub(r"[^a-z0-9]+", "_", base.lower()).strip("_")
    if gauge:
        return name, "gauge", scale
    return name + "_total", "counter", scale


def _label(server: str) -> str:
    escaped = server.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'{{server="{escaped}"}}'


@dataclass(frozen=True)
class ServerMetrics:
    """What one server answered for ``--prometheus`` (None = not available)."""

    server: str
    snmp: Snmp | None
    counters: dict[str, int | float] | None
    native: list[str] | None = None  # SHOW METRICS (our daemon); None: not offered
    threads: list[ThreadLine] | None = None  # THREADS2, when there is no SHOW METRICS


def _samples(m: ServerMetrics) -> Iterator[tuple[str, str, str, int | float]]:
    """``(name, type, help, value)`` for one server."""
    up = int(m.snmp is not None and m.counters is not None)
    yield (
        "zmailer_mailq_up",
        "gauge",
        "Whether the MAILQ v2 server answered (1) or not (0).",
        up,
    )
    if m.snmp is not None:
        values = asdict(m.snmp)
        for key, suffix, kind, text in _SNMP_METRICS:
            yield f"zmailer_mailq_{suffix}", kind, text, values[key]
    for counter, value in (m.counters or {}).items():
        named = _metric_name(counter)
        if named is not None:
            name, kind, scale = named
            yield name, kind, f"ZMailer SHOW COUNTERS {counter}.", value * scale


_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)")


def _lv(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def threads_exposition(threads: list[ThreadLine], top: int = 10) -> list[str]:
    """From THREADS2 (any ZMailer server): the oldest message's age overall and per
    destination, the ``top`` oldest and busiest threads labelled, the rest as ``other``."""
    rows = [(t.qa or 0, t.r, t.channel, t.host) for t in threads]
    chosen = {
        (c, h): (qa, r)
        for qa, r, c, h in [
            *sorted(rows, key=lambda x: -x[0])[:top],
            *sorted(rows, key=lambda x: -x[1])[:top],
        ]
    }
    rest = [(qa, r) for qa, r, c, h in rows if (c, h) not in chosen]
    age = "zmailer_mailq_destination_oldest_age_seconds"
    count = "zmailer_mailq_destination_recipients"
    lines = [
        "# HELP zmailer_mailq_oldest_message_age_seconds Largest QA of SHOW QUEUE THREADS2.",
        "# TYPE zmailer_mailq_oldest_message_age_seconds gauge",
        f"zmailer_mailq_oldest_message_age_seconds {max((r[0] for r in rows), default=0)}",
        f"# HELP {age} QA per thread: the {top} oldest and {top} busiest, the rest as other.",
        f"# TYPE {age} gauge",
        f"# HELP {count} R per thread, same label set; other: the rest.",
        f"# TYPE {count} gauge",
    ]
    for (c, h), (qa, r) in sorted(chosen.items()):
        where = f'channel="{_lv(c)}",host="{_lv(h)}"'
        lines += [f"{age}{{{where}}} {qa}", f"{count}{{{where}}} {r}"]
    other = 'channel="other",host="other"'
    lines += [
        f"{age}{{{other}}} {max((qa for qa, _ in rest), default=0)}",
        f"{count}{{{other}}} {sum(r for _, r in rest)}",
    ]
    return lines


def _native(
    server: str, text: Iterable[str], metrics: dict[str, tuple[str, str, list[str]]]
) -> None:
    """An exposition (SHOW METRICS, or made from THREADS2), each sample labelled
    ``server``."""
    label = _label(server)[1:-1]
    meta: dict[str, list[str]] = {}
    for line in text:
        if line.startswith("# "):
            parts = line.split(" ", 3)
            if len(parts) == 4 and parts[1] in ("HELP", "TYPE"):
                meta.setdefault(parts[2], ["untyped", ""])[parts[1] == "HELP"] = parts[
                    3
                ]
            continue
        found = _SAMPLE.fullmatch(line)
        if found is None:
            continue
        name, labels, value = found.groups()
        kind, text = meta.get(name, ["untyped", ""])
        entry = metrics.setdefault(name, (kind, text or name, []))
        inner = f"{label},{labels}" if labels else label
        entry[2].append(f"{name}{{{inner}}} {value}\n")


def render_prometheus(results: Iterable[ServerMetrics]) -> list[str]:
    """Text exposition: each metric's ``# HELP``/``# TYPE`` once, one sample per server
    (and per label set, for the daemon's own metrics from ``SHOW METRICS``).

    ``zmailer_mailq_up`` is 1 when both SHOW SNMP and SHOW COUNTERS were read, else 0.
    """
    metrics: dict[str, tuple[str, str, list[str]]] = {}
    for m in results:
        label = _label(m.server)
        for name, kind, text, value in _samples(m):
            entry = metrics.setdefault(name, (kind, text, []))
            entry[2].append(f"{name}{label} {value}\n")
    for m in results:
        _native(m.server, m.native or (), metrics)
        if m.native is None and m.threads is not None:
            _native(m.server, threads_exposition(m.threads), metrics)
    lines: list[str] = []
    for name, (kind, text, samples) in metrics.items():
        lines += [f"# HELP {name} {text}\n", f"# TYPE {name} {kind}\n", *samples]
    return lines

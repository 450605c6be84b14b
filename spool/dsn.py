"""Delivery status notifications: the ``d``-line pass and the RFC 3464 report.

SCHED-REF §6. The scheduler appends ``d`` lines (``error``, expiry, ``ok`` with
NOTIFY=SUCCESS) and TAs append their own (``ok2``/``error2``). :func:`run_dsn_pass` turns
the unreported ones into one DSN message, submitted into the spool from the null sender,
and marks each processed line ``d+``.

Everything here is pure (no I/O): :func:`entry_from_diagnostic`, :func:`build_dsn`,
:func:`expiry_diagnostic`, :func:`dsn_recipient`, :func:`summary`. The pass that reads
control files and submits the reports is :func:`spool.dsnpass.run_dsn_pass`.

Fixes against ZMailer (see ``docs/agents.md``): each ``d`` line is counted by the NOTIFY of
its *own* recipient (S54); uncounted entries are omitted, not listed under ``BUG`` (S51);
RFC 3464 field names in the machine part, with ``Action:`` (S52); no crash paths (S24, S25);
expiry ``d`` lines carry the recipient's own address, ``failed`` and ``5.4.7`` (S23).
ZMailer never sends DELAYED warnings (S26): neither do we; a ``d`` line whose action is
``delayed`` is reported only if its recipient asked NOTIFY=DELAY.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from spool import controlfile
from spool.controlfile import ControlFile, Diagnostic, Recipient
from spool.timefmt import saytime_long

__all__ = [
    "DsnEntry",
    "build_dsn",
    "dsn_recipient",
    "entry_from_diagnostic",
    "expiry_diagnostic",
    "expiry_notary",
    "summary",
    "xtext_decode",
]

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)

# Notary action -> (NOTIFY word that asks for it, text-part heading, Subject tag)
_ACTIONS: dict[str, tuple[str, str, str]] = {
    "failed": ("FAILURE", "FAILED:", "FAILED"),
    "delayed": ("DELAY", "DELAYED (still in queue):", "DELAYED"),
    "relayed": (
        "SUCCESS",
        "RELAYED (into system not supporting DSN facility):",
        "RELAYED-OK",
    ),
    "delivered": ("SUCCESS", "DELIVERED (successfully):", "DELIVERED-OK"),
    "expanded": ("SUCCESS", "EXPANDED (to some list or alias):", "EXPANDED-OK"),
}
_SUMMARY_ORDER = ("failed", "delayed", "relayed", "delivered", "expanded")
SUBJECT = "Returned mail: see the transcript"


@dataclass(frozen=True, slots=True)
class DsnEntry:
    """One recipient's part of a DSN, taken from one ``d`` line."""

    action: str  # failed / delayed / delivered / relayed / expanded
    final_recipient: str  # the address (notary field 1, or the r-line user)
    status: str  # enhanced status code, e.g. "5.1.1" ("" if none)
    diagnostic: str  # Diagnostic-Code value, e.g. "smtp; 550 (…)"
    remote_mta: str = ""
    last_attempt: int = 0  # epoch of the d line
    taname: str = ""  # "smtp[1234]"
    orcpt: str | None = None  # ORCPT as in the N line ("rfc822;a+2Bb@x", xtext)
    control_data: str = ""  # the recipient's quad
    message: str = ""  # the TA's text (CR-separated parts)
    header_offset: int = -1


def xtext_decode(text: str) -> str:
    """Undo RFC 3461 xtext: ``+XX`` becomes the byte XX."""
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "+" and _is_hex(text[i + 1 : i + 3]):
            out.append(chr(int(text[i + 1 : i + 3], 16)))
            i += 3
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _is_hex(s: str) -> bool:
    return len(s) == 2 and all(c in "0123456789abcdefABCDEF" for c in s)


def _action_of(notary_action: str) -> str | None:
    """ZMailer's prefix match of notary field 2; ``None`` = unknown ("none")."""
    low = notary_action.strip().lower()
    for name in _ACTIONS:
        if low.startswith(name):
            return name
    return None


def entry_from_diagnostic(diag: Diagnostic, rcpt: Recipient | None) -> DsnEntry | None:
    """Build the entry for one ``d`` line; ``None`` when its notary is empty (skipped)."""
    if not diag.notary:
        return None
    fields = diag.notary.split("\001")
    fields += [""] * (6 - len(fields))
    address = fields[0]
    if address in ("", "\003") and rcpt is not None:
        address = rcpt.user
    action = _action_of(fields[1]) or fields[1].strip().lower()
    status = fields[2].split()[0] if fields[2].split() else ""
    return DsnEntry(
        action=action,
        final_recipient=address,
        status=status,
        diagnostic=fields[3],
        remote_mta=fields[4],
        last_attempt=diag.time,
        taname=fields[5],
        orcpt=rcpt.orcpt if rcpt is not None else None,
        control_data=rcpt.quad if rcpt is not None else "",
        message=diag.message,
        header_offset=diag.header_offset if diag.header_offset >= 0 else _hdr(rcpt),
    )


def _hdr(rcpt: Recipient | None) -> int:
    return rcpt.header_offset if rcpt is not None else -1


def is_counted(entry: DsnEntry, notify: frozenset[str]) -> bool:
    """SCHED-REF 6.3: failed ⇐ FAILURE, delayed ⇐ DELAY, delivered/relayed/expanded ⇐ SUCCESS."""
    wanted = _ACTIONS.get(entry.action)
    if wanted is None or "NEVER" in notify:
        return False
    return wanted[0] in (notify or frozenset({"FAILURE"}))


def summary(entries: Sequence[DsnEntry]) -> str:
    """``[FAILED(n),DELAYED(n),RELAYED-OK(n),DELIVERED-OK(n),EXPANDED-OK(n)]``, non-zero only."""
    parts = []
    for action in _SUMMARY_ORDER:
        n = sum(1 for e in entries if e.action == action)
        if n:
            parts.append(f"{_ACTIONS[action][2]}({n})")
    return "[" + ",".join(parts) + "]"


def dsn_recipient(error_address: str) -> str:
    """The DSN goes to the error address, or to postmaster for pipes and files (6.3 step 4)."""
    addr = error_address.strip()
    if addr.startswith("<") and addr.endswith(">"):
        addr = addr[1:-1]
    if not addr or addr.startswith("|"):
        return "postmaster"
    if addr.startswith("/") and "@" not in addr and "=" not in addr:
        return "postmaster"
    return addr


def _date(ts: int) -> str:
    """RFC 5322 date in UTC (as ``email.utils.format_datetime``, without its socket import)."""
    d = datetime.fromtimestamp(ts, UTC)
    day = _DAYS[d.weekday()]
    return f"{day}, {d.day:02d} {_MONTHS[d.month - 1]} {d.year:04d} {d:%H:%M:%S} +0000"


def _address_type(addr: str) -> str:
    return "rfc822" if "@" in addr and not addr.startswith("ns:") else "x-local"


def _diag_code(diagnostic: str) -> str:
    text = diagnostic.replace("\r", " ").strip()
    if not text:
        return "x-local; (no diagnostic)"
    head = text.split(";", 1)[0]
    return text if ";" in text and " " not in head else f"x-local; {text}"


def _per_message(
    spool_id: str, arrival: int, hostname: str, envid: str | None
) -> list[str]:
    lines = [f"Reporting-MTA: dns; {hostname}"]
    if envid:
        lines.append(f"Original-Envelope-Id: {xtext_decode(envid)}")
    lines.append(f"Arrival-Date: {_date(arrival)}")
    lines.append(f"X-ZMailer-Local-Spool-ID: {spool_id}")
    return lines


def _machine_block(e: DsnEntry) -> list[str]:
    lines: list[str] = []
    if e.orcpt:
        lines.append(f"Original-Recipient: {_orcpt_field(e.orcpt)}")
    lines.append(
        f"Final-Recipient: {_address_type(e.final_recipient)}; {e.final_recipient}"
    )
    lines.append(f"Action: {e.action}")
    lines.append(f"Status: {e.status or _default_status(e.action)}")
    if e.remote_mta:
        lines.append(f"Remote-MTA: dns; {e.remote_mta}")
    lines.append(f"Diagnostic-Code: {_diag_code(e.diagnostic)}")
    if e.last_attempt:
        lines.append(f"Last-Attempt-Date: {_date(e.last_attempt)}")
    if e.taname:
        lines.append(f"X-ZTAID: {e.taname}")
    return lines


def _orcpt_field(orcpt: str) -> str:
    kind, sep, value = orcpt.partition(";")
    if not sep:
        return f"rfc822; {xtext_decode(orcpt)}"
    return f"{kind}; {xtext_decode(value)}"


def _default_status(action: str) -> str:
    if action == "failed":
        return "5.0.0"
    return "4.0.0" if action == "delayed" else "2.0.0"


def _text_block(e: DsnEntry) -> list[str]:
    """The ZMailer-style human-readable entry (SCHED-REF 6.4), without the crash bugs."""
    lines = [_ACTIONS[e.action][1] if e.action in _ACTIONS else f"{e.action.upper()}:"]
    if e.orcpt:
        lines += ["  Original Recipient:", f"      {_orcpt_field(e.orcpt)}"]
    lines += [
        "  Final Recipient:",
        f"      {_address_type(e.final_recipient).upper()};{e.final_recipient}",
    ]
    lines += ["  Action:", f"      {e.action}"]
    if e.status:
        lines += ["  Status:", f"      {e.status}"]
    if e.remote_mta:
        lines += ["  Remote-MTA:", f"      {e.remote_mta}"]
    if e.last_attempt:
        lines += ["  Last-Attempt-Date:", f"      {_date(e.last_attempt)}"]
    if e.taname:
        lines += ["  X-ZTAID:", f"      {e.taname}"]
    lines += ["  Diagnostic-Code:", f"      {e.diagnostic.replace(chr(13), ' ')}", ""]
    if e.control_data:
        lines += ["  Control data:", f"      {e.control_data}"]
    text = e.message.lstrip("\r").replace("\r", "\n      ")
    lines += ["  Diagnostic texts:", f"      {text}", ""]
    return lines


_INTRO = """\
This is a MIME-encapsulated delivery status notification (multipart/report,
RFC 3464). Your mail client may show its formal part separately.

This is the mail delivery system at {host}.
Your message could not be delivered to some or all of its recipients,
or you asked to be told about its delivery. The details follow.
"""


def build_dsn(
    cf: ControlFile,
    entries: list[DsnEntry],
    *,
    spool_id: str,
    arrival: int,
    hostname: str,
    body: bytes | None,
    now: int,
    to: str | None = None,
    double_fault: bool = False,
) -> bytes:
    """Build the RFC 3464 ``multipart/report`` message (LF line ends) for ``entries``."""
    boundary = f"{spool_id}.{now}=_/{hostname}"
    to_addr = to if to is not None else dsn_recipient(cf.error_address)
    subject = f"{SUBJECT} {summary(entries)}"
    if double_fault:
        subject = f"Double-fault: {subject}"
    headers = [
        f"From: The Post Office <postmaster@{hostname}>",
        f"To: <{to_addr}>",
        f"Subject: {subject}",
        f"Date: {_date(now)}",
        f"Message-ID: <{spool_id}.{now}.dsn@{hostname}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
    ]
    per_msg = _per_message(spool_id, arrival, hostname, cf.envid)
    human = [*_INTRO.format(host=hostname).splitlines(), ""]
    human += [*per_msg[:1], f"Return-Path: <{cf.error_address}>", *per_msg[1:], "", ""]
    for e in entries:
        human += _text_block(e)
    status_part = [*per_msg, ""]
    for e in entries:
        status_part += [*_machine_block(e), ""]
    returned = _returned_part(cf, entries, body)
    parts = [
        b"\n".join(_enc(x) for x in headers) + b"\n\n",
        b"This is a MIME-encapsulated message.\n\n",
        _enc(f"--{boundary}\nContent-Type: text/plain; charset=utf-8\n\n"),
        b"\n".join(_enc(x) for x in human) + b"\n",
        _enc(f"--{boundary}\nContent-Type: message/delivery-status\n\n"),
        b"\n".join(_enc(x) for x in status_part) + b"\n",
        _enc(f"--{boundary}\n"),
        returned,
        _enc(f"\n--{boundary}--\n"),
    ]
    return b"".join(parts)


def _enc(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _returned_part(
    cf: ControlFile, entries: Sequence[DsnEntry], body: bytes | None
) -> bytes:
    """``message/rfc822`` (headers + body) or ``text/rfc822-headers`` per RET (6.4)."""
    offset = entries[-1].header_offset if entries else -1
    if offset < 0 and cf.recipients:
        offset = cf.recipients[0].header_offset
    try:
        head = cf.header_block(offset) if offset >= 0 else b""
    except KeyError:
        head = b""
    head = head.rstrip(b"\n") + b"\n" if head.strip() else b""
    some_failed = any(
        e.action == "failed" or e.status[:1] in ("4", "5") for e in entries
    )
    ret = (cf.ret or "").upper()
    if body is not None and some_failed and ret != "HDRS":
        return b"Content-Type: message/rfc822\n\n" + head + b"\n" + body.rstrip(b"\n")
    return b"Content-Type: text/rfc822-headers\n\n" + head


def expiry_notary(last_notary: str, recipient_address: str, expiry_seconds: int) -> str:
    """The S23-fixed expiry notary: own address, ``failed``, ``5.4.7``, last MTA and text."""
    fields = last_notary.split("\001") if last_notary else []
    fields += [""] * (6 - len(fields))
    diag = fields[3] or f"smtp; 500 (Expired after {saytime_long(expiry_seconds)})"
    out = [recipient_address, "failed", "5.4.7", diag, fields[4]]
    if fields[5]:
        out.append(fields[5])
    return "\001".join(x.replace("\n", "\r") for x in out)


def expiry_diagnostic(
    rcpt_offset: int,
    header_offset: int,
    dsn_offset: int,
    now: int,
    expiry_seconds: int,
    last_notary: str,
    last_message: str,
    recipient_address: str,
) -> bytes:
    """The ``d`` line the scheduler appends when a recipient expires (SCHED-REF 4.7, S23)."""
    long = saytime_long(expiry_seconds)
    if last_message:
        message = f"\rexpired after {long}, problem was:\r{last_message}"
    else:
        message = f"expired after {long}"
    notary = expiry_notary(last_notary, recipient_address, expiry_seconds)
    return controlfile.format_diagnostic(
        rcpt_offset, header_offset, dsn_offset, now, notary, message.replace("\n", "\r")
    )

"""``mailq-spool``: create, fill, list and check a ZMailer postoffice."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import click

from spool.check import ORPHAN_MIN_AGE, check_postoffice
from spool.controlfile import ControlFile, parse
from spool.errors import CorruptControlFile, SpoolError
from spool.ids import message_number, spool_id
from spool.layout import Postoffice, init_postoffice
from spool.opstate import read_holds
from spool.scan import scan
from spool.store import quarantine, read_control
from spool.submit import submit
from spool.timefmt import saytime

__all__ = ["main"]

_PO = click.option(
    "-P",
    "--postoffice",
    "postoffice",
    envvar="POSTOFFICE",
    required=True,
    type=click.Path(file_okay=False),
    help="Postoffice directory (default: $POSTOFFICE).",
)


@click.group()
@click.option("-v", "--verbose", count=True, help="Log more (repeatable).")
def main(verbose: int) -> None:
    """Create, fill, list and check a ZMailer postoffice."""
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(
        level=max(level, logging.DEBUG), format="mailq-spool: %(message)s"
    )


@main.command()
@click.argument("directory", type=click.Path(file_okay=False))
def init(directory: str) -> None:
    """Create a postoffice: router/ queue/ transport/ deferred/ freezer/ public/ postman/."""
    po = init_postoffice(directory)
    click.echo(str(po.root))


@main.command("submit")
@_PO
@click.option("-f", "--from", "sender", required=True, help="Envelope sender.")
@click.option("-H", "--hash-levels", type=click.IntRange(0, 2), default=0)
@click.option("--error-message", is_flag=True, help="A bounce: null sender, 's error'.")
@click.option("--no-notify", is_flag=True, help="Do not send NEW to the scheduler.")
@click.argument("recipients", nargs=-1, required=True)
def submit_cmd(
    postoffice: str,
    sender: str,
    hash_levels: int,
    error_message: bool,
    no_notify: bool,
    recipients: tuple[str, ...],
) -> None:
    """Queue the message on stdin for RECIPIENT... (user@domain, user, "channel host user")."""
    message = sys.stdin.buffer.read()
    try:
        relpath = submit(
            Postoffice(postoffice),
            sender,
            list(recipients),
            message,
            hash_levels=hash_levels,
            error_message=error_message,
            notify=not no_notify,
        )
    except (SpoolError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(relpath)


@dataclass(slots=True)
class _Listed:
    relpath: str
    control: ControlFile
    size: int
    mtime: int
    mtime_ns: int


def _messages(po: Postoffice, errors: list[str]) -> Iterator[_Listed]:
    for entry in scan(po):
        path = po.control_path(entry.relpath)
        try:
            cf = parse(read_control(path), os.fspath(path))
        except FileNotFoundError:
            continue
        except CorruptControlFile as exc:
            errors.append(str(exc))
            continue
        size, mtime, mtime_ns = -1, 0, 0
        try:
            st = po.message_path(entry.relpath, cf.mid).stat()
            size, mtime, mtime_ns = st.st_size, int(st.st_mtime), st.st_mtime_ns % 10**9
        except OSError:
            errors.append(f"{path}: missing message file")
        yield _Listed(entry.relpath, cf, size, mtime, mtime_ns)


def _record(
    m: _Listed, now: float, holds: dict[str, tuple[str, int, str, str]] | None = None
) -> dict[str, Any]:
    cf = m.control
    sender = "" if cf.is_error_message or cf.sender is None else cf.sender[2]
    number = message_number(cf.mid or m.relpath) if (cf.mid or "")[:1].isdigit() else 0
    sid = spool_id(number, m.mtime, m.mtime_ns) if m.size >= 0 else None
    hold = (holds or {}).get(sid or "")
    return {
        "path": m.relpath,
        "spool_id": sid,
        "held": None
        if hold is None
        else {"since": hold[1], "op": hold[2], "reason": hold[3]},
        "sender": sender,
        "size": m.size,
        "age": int(now - m.mtime) if m.size >= 0 else None,
        "mid": cf.mid,
        "log_id": cf.log_id,
        "recipients": [
            {
                "offset": r.offset,
                "channel": r.channel,
                "host": r.host,
                "user": r.user,
                "status": r.status,
            }
            for r in cf.recipients
        ],
        "diagnostics": [
            {
                "rcpt_offset": d.rcpt_offset,
                "time": d.time,
                "notary": d.notary,
                "message": d.message,
                "reported": d.reported,
            }
            for d in cf.diagnostics
        ],
    }


_STATUS = {" ": "queued", "~": "locked", "+": "done", "-": "failed"}


def _text(rec: dict[str, Any]) -> Iterator[str]:
    age = "?" if rec["age"] is None else saytime(rec["age"])
    held = rec.get("held")
    note = "" if held is None else f" held ({held['reason']})"
    yield (
        f"{rec['path']} {rec['spool_id'] or '-'} from <{rec['sender']}>"
        f" size {rec['size']} age {age}{note}"
    )
    last = {d["rcpt_offset"]: d for d in rec["diagnostics"]}
    for r in rec["recipients"]:
        status = _STATUS.get(r["status"], r["status"])
        if held is not None and r["status"] == " ":
            status = "held"
        yield (
            f"  {r['offset']} {r['channel']} {r['host'] or '-'} {r['user']} {status}"
        )
        diag = last.get(r["offset"])
        if diag is not None:
            text = " ".join(diag["message"].replace("\r", " ").split())
            yield f"    last diagnostic at {diag['time']}: {text}"


@main.command("list")
@_PO
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_cmd(postoffice: str, as_json: bool) -> None:
    """Every message: path, spool-id, sender, size, age, recipients, diagnostics."""
    po = Postoffice(postoffice)
    if not po.transport.is_dir():
        raise click.ClickException(
            f"{postoffice} is not a postoffice (no transport/ directory)"
        )
    errors: list[str] = []
    now = time.time()
    holds = {row[0]: row for row in read_holds(po.root)}
    for m in _messages(po, errors):
        rec = _record(m, now, holds)
        if as_json:
            click.echo(json.dumps(rec, ensure_ascii=False))
        else:
            for line in _text(rec):
                click.echo(line)
    for err in errors:
        click.echo(err, err=True)
    if errors:
        sys.exit(1)


@main.command()
@_PO
@click.option(
    "--quarantine", "do_quarantine", is_flag=True, help="Move bad files to freezer/."
)
@click.option(
    "--orphan-age",
    type=click.FloatRange(min=0),
    default=ORPHAN_MIN_AGE,
    show_default=True,
    help="Seconds after which a message file without a control file is an orphan.",
)
def check(postoffice: str, do_quarantine: bool, orphan_age: float) -> None:
    """Report every problem as path:line: reason; exit 1 if there is any."""
    po = Postoffice(postoffice)
    if not po.transport.is_dir():
        raise click.ClickException(f"{po.transport}: not a postoffice")
    problems = list(check_postoffice(po, orphan_min_age=orphan_age))
    for problem in problems:
        click.echo(str(problem))
    if do_quarantine:
        reasons: dict[str, list[str]] = {}
        for problem in problems:
            if problem.relpath:  # not an unreadable directory
                reasons.setdefault(problem.relpath, []).append(str(problem))
        for relpath, texts in reasons.items():
            dest = quarantine(po, relpath, "; ".join(texts))
            click.echo(f"{relpath}: quarantined as {dest}", err=True)
    if problems:
        sys.exit(1)

"""The ``d``-line pass: turn a message's unreported ``d`` lines into one DSN.

SCHED-REF §6.3. Reads the control file, builds the report with :mod:`spool.dsn`, submits
it into the postoffice from the null sender and marks each processed line ``d+`` (after
the submission: a crash in between repeats a DSN rather than losing one).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from spool import controlfile, routersubmit, store
from spool.controlfile import ControlFile, Diagnostic
from spool.dsn import (
    DsnEntry,
    build_dsn,
    dsn_recipient,
    entry_from_diagnostic,
    is_counted,
    summary,
)
from spool.errors import SpoolError
from spool.ids import message_number, spool_id as make_spool_id
from spool.layout import Postoffice
from spool.submit import submit

__all__ = ["collect", "dsn_pass_for", "run_dsn_pass"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Collected:
    counted: list[DsnEntry]
    processed: list[Diagnostic]


def collect(cf: ControlFile) -> _Collected:
    """Every ``d `` line, with the entries its own recipient's NOTIFY asks for (S54)."""
    by_offset = {r.offset: r for r in cf.recipients}
    counted: list[DsnEntry] = []
    processed: list[Diagnostic] = []
    for diag in cf.diagnostics:
        if diag.status != " ":
            continue
        processed.append(diag)
        rcpt = by_offset.get(diag.rcpt_offset)
        entry = entry_from_diagnostic(diag, rcpt)
        if entry is None:
            continue
        notify = rcpt.notify if rcpt is not None else frozenset({"FAILURE"})
        if is_counted(entry, notify):
            counted.append(entry)
    return _Collected(counted, processed)


def run_dsn_pass(
    po: Postoffice,
    relpath: str,
    *,
    now: int,
    hostname: str,
    store_error_on_error: bool = False,
    zenv: Mapping[str, str] | None = None,
) -> str | None:
    """SCHED-REF 6.3 with the fixes: report the unreported ``d`` lines of one message.

    Where the site has ZMailer's router (``$MAILBIN/router`` in ``zenv``), the DSN goes
    into ``router/`` as ZMailer's scheduler sends it (``channel error``, ``errormsg``,
    ``todsn ORCPT=rfc822;...``, ``to <...>``), so aliases and routing apply to it;
    otherwise straight into ``transport/``.

    Returns the new DSN's relpath in ``transport/``, or ``None`` when nothing was sent
    there (nothing to report, or the DSN went to the router). Every processed
    ``d`` line is marked ``d+`` (after the DSN was submitted: a crash in between repeats
    a DSN rather than losing one).
    """
    path = po.control_path(relpath)
    cf = controlfile.parse(store.read_control(path), str(path))
    got = collect(cf)
    if not got.processed:
        return None
    new_relpath: str | None = None
    if not got.counted:
        log.info("%s: nothing to report", relpath)
    elif cf.is_error_message:
        _double_fault(po, relpath, cf, got.counted, now, hostname, store_error_on_error)
    elif not cf.error_address:
        log.warning(
            "%s: no error address, %d report(s) dropped", relpath, len(got.counted)
        )
    else:
        new_relpath = _submit(po, relpath, cf, got.counted, now, hostname, zenv or {})
    for diag in got.processed:
        store.mark_diagnostic_reported(path, diag.offset)
    return new_relpath


def _origin(
    po: Postoffice, relpath: str, cf: ControlFile
) -> tuple[str, int, bytes | None]:
    """(spool-id, arrival epoch, body or None) of the original message."""
    number = message_number(Path(relpath).name)
    mpath = po.message_path(relpath, cf.mid)
    try:
        st = os.stat(mpath)
    except OSError:
        ctl = os.stat(po.control_path(relpath))
        return make_spool_id(number, int(ctl.st_mtime), 0), int(ctl.st_mtime), None
    sid = make_spool_id(number, int(st.st_mtime), st.st_mtime_ns % 1_000_000_000)
    try:
        with store.open_message(mpath) as f:  # never a link or a FIFO
            f.seek(cf.body_offset or 0)
            body: bytes | None = f.read()
    except (OSError, SpoolError):
        body = None
    return sid, int(st.st_mtime), body


def _submit(
    po: Postoffice,
    relpath: str,
    cf: ControlFile,
    entries: list[DsnEntry],
    now: int,
    hostname: str,
    zenv: Mapping[str, str],
) -> str | None:
    sid, arrival, body = _origin(po, relpath, cf)
    to = dsn_recipient(cf.error_address)
    message = build_dsn(
        cf,
        entries,
        spool_id=sid,
        arrival=arrival,
        hostname=hostname,
        body=body,
        now=now,
        to=to,
    )
    if routersubmit.choose("auto", zenv) == "router":
        orcpt = f"ORCPT=rfc822;{routersubmit.xtext(to)}"
        head = routersubmit.envelope(None, [(to, orcpt)], errormsg=True)
        name = routersubmit.submit_to_router(po, head + message, zenv)
        log.info("%s: DSN router/%s sent to <%s> %s", sid, name, to, summary(entries))
        return None
    levels = relpath.count("/")
    new: str = submit(po, "", [to], message, hash_levels=levels, error_message=True)
    log.info("%s: DSN %s sent to <%s> %s", sid, new, to, summary(entries))
    return new


def _double_fault(
    po: Postoffice,
    relpath: str,
    cf: ControlFile,
    entries: list[DsnEntry],
    now: int,
    hostname: str,
    store_it: bool,
) -> None:
    """A bounce that failed: never bounce it again; log it, or keep it in ``postman/``."""
    sid, arrival, body = _origin(po, relpath, cf)
    log.warning(
        "%s: double fault (failed error message) %s, no DSN sent", sid, summary(entries)
    )
    if not store_it:
        return
    message = build_dsn(
        cf,
        entries,
        spool_id=sid,
        arrival=arrival,
        hostname=hostname,
        body=body,
        now=now,
        to="postmaster",
        double_fault=True,
    )
    target = po.postman / f"{Path(relpath).name}:error-on-error"
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, message)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)


def dsn_pass_for(zenv: Mapping[str, str]) -> Callable[..., str | None]:
    """The daemon's DSN pass for a site: :func:`run_dsn_pass` with the site's ``zenv``."""
    return functools.partial(run_dsn_pass, zenv=dict(zenv))

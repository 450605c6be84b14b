"""The mailbox (local delivery) agent: ``python -m scheduler.ta.mailbox [-d DIR] [--auto-create]``.

Delivers each ``local`` recipient into the Maildir ``DIR/<user>/`` (``tmp`` → ``new`` with a
unique name, file and directory fsynced), with ``Return-Path:`` and ``Delivered-To:``
headers added before the message's own headers. ``DIR`` defaults to ``$MAILBOX``. A user
without a folder gets ``error`` (5.1.1 no such user) unless ``--auto-create``.
"""

from __future__ import annotations

import argparse
import errno
import itertools
import logging
import os
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from scheduler.ta import libta
from scheduler.ta.libta import JobContext, OneByOne, Outcome
from spool.controlfile import Recipient
from spool.store import fsync_dir

log = logging.getLogger(__name__)

_counter = itertools.count(1)


def folder_name(user: str) -> str | None:
    """The Maildir folder of a recipient, or ``None`` if the name is unusable."""
    name = user.strip()
    if name.startswith("<") and name.endswith(">"):
        name = name[1:-1]
    if "@" in name:
        name = name.split("@", 1)[0]
    if not name or name.startswith(".") or "/" in name or "\0" in name:
        return None
    return name


def unique_name(now: float | None = None) -> str:
    """A Maildir unique name: ``<sec>.M<usec>P<pid>Q<n>.<host>``."""
    t = time.time() if now is None else now
    sec = int(t)
    usec = int((t - sec) * 1_000_000)
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
    return f"{sec}.M{usec}P{os.getpid()}Q{next(_counter)}.{host}"


def delivery_bytes(sender: str, user: str, header: bytes, body: bytes) -> bytes:
    """``Return-Path:`` + ``Delivered-To:`` + the message headers, empty line, body."""
    head = f"Return-Path: <{sender}>\nDelivered-To: {user}\n".encode(
        "utf-8", "surrogateescape"
    )
    return head + header.rstrip(b"\n") + b"\n\n" + body


def write_maildir(folder: Path, data: bytes) -> Path:
    """Write ``data`` into ``folder/tmp``, fsync, move it to ``folder/new``; return the path."""
    name = unique_name()
    tmp = folder / "tmp" / name
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    final = folder / "new" / name
    os.link(tmp, final)
    tmp.unlink()
    fsync_dir(folder / "new")
    return final


def make_maildir(folder: Path) -> None:
    for sub in ("", "tmp", "new", "cur"):
        (folder / sub).mkdir(mode=0o700, exist_ok=True)


class MailboxAgent(OneByOne):
    """The Maildir deliverer (one recipient at a time)."""

    def __init__(self, root: Path, auto_create: bool) -> None:
        self.root = root
        self.auto_create = auto_create
        self.hostname = socket.gethostname()

    def deliver_one(self, ctx: JobContext, rcpt: Recipient) -> Outcome:
        name = folder_name(rcpt.user)
        if name is None:
            diag = f"x-local; 550 (5.1.3 bad mailbox name {rcpt.user!r})"
            return Outcome("error", "5.1.3", diag, message="5.1.3 bad mailbox name")
        folder = self.root / name
        if not (folder / "new").is_dir():
            if not self.auto_create:
                diag = "x-local; 550 (5.1.1 no such user)"
                return Outcome("error", "5.1.1", diag, message="5.1.1 no such user")
            make_maildir(folder)
        cf = ctx.control
        sender = "" if cf.is_error_message else cf.error_address
        header = cf.header_block(rcpt.header_offset) if rcpt.header_offset >= 0 else b""
        try:
            data = delivery_bytes(sender, rcpt.user, header, ctx.message_body())
            path = write_maildir(folder, data)
        except OSError as exc:
            status = "4.3.1" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "4.2.0"
            diag = f"x-local; 400 (maildir {folder}: {exc.strerror or exc})"
            log.warning("%s: %s", ctx.relpath, diag)
            return Outcome("deferred", status, diag, remote_mta=self.hostname)
        log.info("%s: delivered to %s", ctx.relpath, path)
        return Outcome(
            "ok",
            "2.2.0",
            "x-local; 250 (Delivered successfully)",
            remote_mta=self.hostname,
        )


def parser() -> argparse.ArgumentParser:
    p = libta.common_parser("mailbox", "Local Maildir delivery agent.", "local")
    p.add_argument("-d", "--dir", default=None, help="mailbox root (default $MAILBOX)")
    p.add_argument("--auto-create", action="store_true", help="create missing Maildirs")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    libta.setup_logging("mailbox")
    args = libta.parse_args(parser(), argv)
    options = libta.options_from(args, "mailbox")
    root = args.dir or os.environ.get("MAILBOX")
    if not root:
        log.error("no mailbox directory: give -d DIR or set MAILBOX")
        return 78
    return libta.run_agent(options, MailboxAgent(Path(root), args.auto_create))


if __name__ == "__main__":
    sys.exit(main())

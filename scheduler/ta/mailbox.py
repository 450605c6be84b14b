"""The mailbox (local delivery) agent: ``python -m scheduler.ta.mailbox [options]``.

Each ``local`` recipient is delivered by the form of its user field:

* ``name`` (also ``\\name``, ``"name"``, ``name@host``, ``name+ext``): into the mailbox of
  ``name`` under the mail directory (``-d``, else ``MAILBOX`` of the zmailer.conf that
  ``$ZCONFIG`` names, else ``$MAILBOX``, else the first of ``/var/mail``,
  ``/var/spool/mail``). An existing mailbox keeps its form: a directory with ``new/`` is a
  Maildir, a file an mbox (:mod:`scheduler.ta.mailstores`, ZMailer's locking). A user
  without one gets a new mailbox in the site's form (``--format``, default mbox as
  ZMailer) when the name is a system user (or with ``--auto-create``), else ``error``
  5.1.1 no such user.
* ``|command``: run with the recipient's privilege, message on stdin;
* ``/path``: appended to as an mbox with the recipient's privilege
  (:mod:`scheduler.ta.privileged`; root only, refused otherwise).

``Return-Path:`` and ``Delivered-To:`` headers go before the message's own. A full disk,
a quota or a busy lock defers; it never bounces.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import pwd
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from scheduler.ta import libta
from scheduler.ta.libta import JobContext, OneByOne, Outcome
from scheduler.ta.mailstores import (
    LockBusy,
    make_maildir,
    mbox_bytes,
    write_maildir,
    write_mbox,
)
from scheduler.ta.privileged import (
    PrivilegeRefused,
    append_file,
    identity_for,
    run_program,
)
from spool.controlfile import Recipient
from spool.zenv import read_zenv

log = logging.getLogger(__name__)

DEFAULT_DIRS = ("/var/mail", "/var/spool/mail")

__all__ = ["MailboxAgent", "Site", "delivery_bytes", "folder_name", "mail_directory"]


def folder_name(user: str) -> str | None:
    """The mailbox name of a recipient, or ``None`` if the name is unusable."""
    name = user.strip().lstrip("\\")
    if len(name) > 1 and name[0] == name[-1] == '"':
        name = name[1:-1]
    if name.startswith("<") and name.endswith(">"):
        name = name[1:-1]
    name = name.split("@", 1)[0].split("+", 1)[0]
    if not name or name.startswith(".") or "/" in name or "\0" in name:
        return None
    return name


def target_of(user: str) -> str:
    """The user field without quotes and escapes: ``|cmd``, ``/file`` or a name."""
    text = user.strip()
    if len(text) > 1 and text[0] == text[-1] == '"':
        text = text[1:-1]
    return text


def delivery_bytes(sender: str, user: str, header: bytes, body: bytes) -> bytes:
    """``Return-Path:`` + ``Delivered-To:`` + the message headers, empty line, body."""
    head = f"Return-Path: <{sender}>\nDelivered-To: {user}\n".encode(
        "utf-8", "surrogateescape"
    )
    return head + header.rstrip(b"\n") + b"\n\n" + body


def mail_directory(option: str | None, zenv: Mapping[str, str]) -> str | None:
    """``-d``, else ZENV ``MAILBOX``, else the first existing default directory."""
    if option:
        return option
    if zenv.get("MAILBOX"):
        return zenv["MAILBOX"]
    return next((d for d in DEFAULT_DIRS if os.path.isdir(d)), None)


@dataclass(frozen=True, slots=True)
class Site:
    root: Path
    new_format: str = "mbox"  # the form of a mailbox made for a new user
    auto_create: bool = False
    program_timeout: float = 600.0
    env: Mapping[str, str] | None = None


def _write_failure(exc: OSError, where: str, host: str) -> Outcome:
    """Every local write failure defers (quota and full disk included)."""
    if exc.errno == errno.EDQUOT:
        status, text = "4.2.2", "mailbox quota exceeded"
    elif exc.errno == errno.ENOSPC:
        status, text = "4.3.1", "mail system full"
    elif isinstance(exc, LockBusy):
        status, text = "4.2.0", "mailbox busy (locked)"
    else:
        status, text = "4.2.0", "mailbox write failure"
    diag = f"x-local; 450 ({text}: {where}: {exc.strerror or exc})"
    return Outcome("deferred", status, diag, remote_mta=host)


class MailboxAgent(OneByOne):
    """Local delivery, one recipient at a time."""

    def __init__(self, site: Site, is_root: bool | None = None) -> None:
        self.site = site
        self.is_root = os.geteuid() == 0 if is_root is None else is_root
        self.hostname = socket.gethostname()

    def deliver_one(self, ctx: JobContext, rcpt: Recipient) -> Outcome:
        cf = ctx.control
        sender = "" if cf.is_error_message else cf.error_address
        header = cf.header_block(rcpt.header_offset) if rcpt.header_offset >= 0 else b""
        target = target_of(rcpt.user)
        data = delivery_bytes(sender, target, header, ctx.message_body())
        if target.startswith(("|", "/")):
            return self._privileged(ctx, rcpt, target, sender, data)
        name = folder_name(rcpt.user)
        if name is None:
            diag = f"x-local; 550 (5.1.3 bad mailbox name {rcpt.user!r})"
            return Outcome("error", "5.1.3", diag, message="5.1.3 bad mailbox name")
        try:
            where = self._store(ctx, name, sender, data)
        except OSError as exc:
            outcome = _write_failure(exc, str(self.site.root / name), self.hostname)
            log.warning("%s: %s", ctx.relpath, outcome.diagnostic)
            return outcome
        if where is None:
            diag = "x-local; 550 (5.1.1 no such user)"
            return Outcome("error", "5.1.1", diag, message="5.1.1 no such user")
        log.info("%s: delivered to %s", ctx.relpath, where)
        return Outcome(
            "ok",
            "2.2.0",
            "x-local; 250 (Delivered successfully)",
            remote_mta=self.hostname,
        )

    def _store(
        self, ctx: JobContext, name: str, sender: str, data: bytes
    ) -> str | None:
        """Deliver into ``name``'s mailbox; the path, or None for no such user."""
        path = self.site.root / name
        if (path / "new").is_dir():
            return str(write_maildir(path, data))
        if path.is_file():
            write_mbox(str(path), mbox_bytes(sender, data))
            return str(path)
        owner = _system_user(name)
        if owner is None and not self.site.auto_create:
            return None
        if self.site.new_format == "maildir":
            make_maildir(path)
            if owner is not None and self.is_root:
                for sub in ("", "tmp", "new", "cur"):
                    os.chown(path / sub, owner.pw_uid, owner.pw_gid)
            return str(write_maildir(path, data))
        write_mbox(str(path), mbox_bytes(sender, data))
        if owner is not None and self.is_root:
            os.chown(path, owner.pw_uid, owner.pw_gid)
        return str(path)

    def _privileged(
        self, ctx: JobContext, rcpt: Recipient, target: str, sender: str, data: bytes
    ) -> Outcome:
        what = "program" if target.startswith("|") else "file"
        try:
            who = identity_for(rcpt.privilege, self.is_root, what)
        except PrivilegeRefused as exc:
            diag = f"x-local; 550 (5.2.1 {exc})"
            return Outcome("error", "5.2.1", diag, message=f"5.2.1 {exc}")
        entry = mbox_bytes(sender, data)
        if what == "file":
            try:
                append_file(target, who, entry)
            except OSError as exc:
                return _write_failure(exc, target, self.hostname)
            return Outcome("ok", "2.2.0", "x-local; 250 (Delivered successfully)",
                           remote_mta=self.hostname)  # fmt: skip
        env = dict(self.site.env or {})
        env["SENDER"] = sender or "<>"
        result = run_program(
            target[1:], who, entry[:-1], env, self.site.program_timeout
        )
        if result.status == "ok":
            return Outcome("ok", "2.2.0", "x-local; 250 (Delivered to the program)",
                           remote_mta=self.hostname)  # fmt: skip
        if result.status == "deferred":
            return Outcome("deferred", "4.3.0", f"x-local; 450 ({result.text})",
                           remote_mta=self.hostname)  # fmt: skip
        return Outcome("error", "5.3.0", f"x-local; 550 ({result.text})",
                       remote_mta=self.hostname)  # fmt: skip


def _system_user(name: str) -> pwd.struct_passwd | None:
    for candidate in (name, name.lower()):
        try:
            return pwd.getpwnam(candidate)
        except KeyError:
            continue
    return None


def parser() -> argparse.ArgumentParser:
    p = libta.common_parser(
        "mailbox", "Local delivery agent (mbox or Maildir).", "local"
    )
    p.add_argument("-d", "--dir", default=None, help="mail directory (default MAILBOX)")
    p.add_argument(
        "--format",
        choices=("mbox", "maildir"),
        default="mbox",
        help="form of a new user's mailbox (existing ones keep theirs)",
    )
    p.add_argument(
        "--auto-create", action="store_true", help="make mailboxes for any name"
    )
    p.add_argument("--program-timeout", type=float, default=600.0)
    libta.ignore_flags(p, "8")
    libta.ignore_options_with_argument(p, "Flh")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    libta.setup_logging("mailbox")
    args = libta.parse_args(parser(), argv)
    options = libta.options_from(args, "mailbox")
    try:
        zenv = read_zenv()
    except OSError as exc:
        log.error("cannot read zmailer.conf: %s", exc)
        return 78
    root = mail_directory(args.dir, zenv)
    if not root:
        log.error("no mail directory: give -d DIR or set MAILBOX in zmailer.conf")
        return 78
    names: tuple[str, ...] = ("ZCONFIG", "MAILBOX", "MAILBIN", "MAILSHARE")
    env = {k: zenv[k] for k in names if k in zenv}
    env["PATH"] = zenv.get("PATH") or os.environ.get("PATH") or "/usr/bin:/bin"
    site = Site(Path(root), args.format, args.auto_create, args.program_timeout, env)
    return libta.run_agent(options, MailboxAgent(site))


if __name__ == "__main__":
    sys.exit(main())

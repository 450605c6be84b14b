"""Atomic submission of a message into the postoffice, the way ZMailer's router does.

1. The message is written to a temporary file in ``public/``, fsync'ed, and linked
   into ``queue/<hash><inode>``: its name is its i-node number.
2. The control file is written as ``transport/<hash>.<inode>`` (a dot name, which
   scans ignore), fsync'ed, then linked to ``transport/<hash><inode>``.

If that name is in use at any hash level (a control file left behind after its message
file was unlinked: the i-node number comes back), the old-style unique name
``<inode>-<pid>`` (then ``<inode>-<pid>-<n>``) is used instead; ZMailer reads those
too, taking the leading number as the id.
3. A ``NEW <relpath>`` datagram goes to the scheduler's notify socket, if it exists.

Anything that fails on the way is undone, so a reader sees a complete message or none.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from spool.controlfile import format_quad, format_recipient_line, parse
from spool.errors import CorruptControlFile, SubmitError
from spool.ids import hash_prefix, message_number
from spool.layout import Postoffice
from spool.scan import make_hash_dirs
from spool.store import fsync_dir, write_all

__all__ = [
    "MAX_NAME_TRIES",
    "build_control",
    "candidate_names",
    "parse_recipient",
    "split_headers",
    "submit",
]

log = logging.getLogger(__name__)


def parse_recipient(spec: str | tuple[str, str, str]) -> tuple[str, str, str]:
    """``user@domain`` -> ``(smtp, domain lower-cased, user@domain)``; ``user`` ->
    ``(local, user, user)``; ``"channel host user"`` -> its three words; an address with
    a quoted local part (``"john doe"@example.com``) is one address, blanks and all."""
    if isinstance(spec, tuple):
        channel, host, user = spec
    elif '"' in spec:  # one address with a quoted local part: "john doe"@example.com
        channel, host, user = _quoted_address(spec)
    else:
        words = spec.split()
        if len(words) == 3:
            channel, host, user = words
        elif len(words) == 1 and "@" in spec:
            domain = spec.rpartition("@")[2]
            channel, host, user = "smtp", domain.lower(), spec
        elif len(words) == 1:
            channel, host, user = "local", spec, spec
        else:
            raise SubmitError(
                f"bad recipient {spec!r}: want user@domain, user or 3 words"
            )
    for value in (channel, host, user):
        if not value or "\n" in value or "\r" in value:
            raise SubmitError(f"bad recipient {spec!r}")
    return channel, host, user


def _quoted_address(spec: str) -> tuple[str, str, str]:
    """``"john doe"@Example.com`` -> smtp to ``example.com``; ``"o'hara smith"`` -> local.

    The domain is after the last ``@`` outside the quotes (blanks inside them are part of
    the local part, as RFC 5321 allows)."""
    at = spec.rfind("@")
    if at > 0 and spec.count('"', 0, at) % 2 == 0 and '"' not in spec[at:]:
        return "smtp", spec[at + 1 :].lower(), spec
    return "local", spec, spec


def split_headers(message: bytes) -> tuple[bytes, int]:
    """``(header text for the m block, body offset in the message file)``.

    The headers end at the first empty line (LF or CRLF); the copy for the ``m`` block
    has LF line ends and ends with one LF (it is empty if there are no headers).
    """
    if message.startswith(b"\n"):
        return b"", 1
    if message.startswith(b"\r\n"):
        return b"", 2
    found = [
        (at, width)
        for at, width in ((message.find(b"\n\n"), 2), (message.find(b"\n\r\n"), 3))
        if at >= 0
    ]
    if found:
        at, width = min(found)
        headers, body = message[: at + 1], at + width
    else:
        headers, body = message, len(message)
    headers = headers.replace(b"\r\n", b"\n")
    if headers and not headers.endswith(b"\n"):
        headers += b"\n"
    return headers, body


def _message_id(headers: bytes) -> str | None:
    """The Message-ID header's value (unfolded), or None."""
    lines = headers.split(b"\n")
    for i, line in enumerate(lines):
        if line[:11].lower() == b"message-id:":
            value = line[11:]
            for cont in lines[i + 1 :]:
                if cont[:1] not in (b" ", b"\t"):
                    break
                value += b" " + cont.strip()
            text = value.decode("utf-8", "surrogateescape").strip()
            return " ".join(text.split()) or None
    return None


def build_control(
    name: str,
    sender: str,
    recipients: Sequence[tuple[str, str, str]],
    headers: bytes,
    body_offset: int,
    *,
    error_message: bool = False,
    extra_lines: Sequence[bytes] = (),
) -> bytes:
    """The control file of a new message (pure). ``extra_lines`` (complete lines, each
    ending in LF) go after the ``s`` line, before the recipients."""
    if "\n" in sender or "\r" in sender:
        raise SubmitError(f"bad sender {sender!r}")
    msgid = _message_id(headers) or f"<{name}.mailq-spool@{socket.gethostname()}>"
    out = [b"@ 0x00000007\n", f"i {name}\no {body_offset}\nl {msgid}\n".encode()]
    if error_message:
        out.append(b"s error - - 0\n")
    else:
        if sender:
            out.append(f"e {sender}\n".encode("utf-8", "surrogateescape"))
        quad = format_quad("local", "", sender, "0")
        out.append(f"s {quad}\n".encode("utf-8", "surrogateescape"))
    for line in extra_lines:
        if not line.endswith(b"\n") or line.count(b"\n") != 1:
            raise SubmitError(f"extra line must be one LF-terminated line: {line!r}")
        out.append(line)
    if not recipients:
        raise SubmitError("no recipients")
    for channel, host, user in recipients:
        out.append(format_recipient_line(format_quad(channel, host, user, "0")))
    out.append(b"m\n" + headers + b"\n")
    data = b"".join(out)
    try:
        parse(data, f"<new control file {name}>")
    except CorruptControlFile as exc:
        raise SubmitError(f"would write a corrupt control file: {exc}") from exc
    return data


MAX_NAME_TRIES = 100
"""Names tried for one submission before giving up (``<inode>``, ``<inode>-<pid>``,
``<inode>-<pid>-1``, ...)."""


def candidate_names(inode: int, pid: int) -> Iterator[str]:
    """The names a message may get: its i-node number, then the old-style unique
    ``<inode>-<pid>`` and ``<inode>-<pid>-<n>`` (ZMailer reads those too; the leading
    number is still the id)."""
    yield str(inode)
    yield f"{inode}-{pid}"
    for n in range(1, MAX_NAME_TRIES - 1):
        yield f"{inode}-{pid}-{n}"


def _name_in_use(po: Postoffice, name: str) -> bool:
    """A control file, its temporary, or a message file of that name exists at any hash
    level: an unlinked message file's control file left behind, and i-node reuse."""
    number = message_number(name)
    for levels in (0, 1, 2):
        prefix = hash_prefix(number, levels)
        for path in (
            po.transport / (prefix + name),
            po.transport / (prefix + "." + name),
            po.queue / (prefix + name),
        ):
            if os.path.lexists(path):
                return True
    return False


def _write_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:  # ENOSPC/EIO: leave no half-written file behind
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


def notify_scheduler(po: Postoffice, relpath: str) -> bool:
    """Send ``NEW <relpath>`` to the notify socket if there is one; never raises."""
    path = po.notify_socket
    if not path.exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.sendto(f"NEW {relpath}".encode(), os.fspath(path))
    except OSError as exc:
        log.debug("notify %s: %s", path, exc)
        return False
    return True


def _place(
    po: Postoffice,
    tmp: Path,
    inode: int,
    hash_levels: int,
    control_for: Callable[[str], bytes],
    placed: list[Path],
) -> str:
    """Link the message file ``tmp`` and write its control file under the first free
    name of :func:`candidate_names`; return the relpath. ``placed`` lists what exists
    so far (for the caller's clean-up)."""
    prefix = hash_prefix(inode, hash_levels)
    for name in candidate_names(inode, os.getpid()):
        if _name_in_use(po, name):
            log.info("spool name %s is in use; trying another", name)
            continue
        control = control_for(name)  # may refuse (SubmitError) before anything exists
        make_hash_dirs(po, prefix)
        msg_path = po.queue / (prefix + name)
        ctl_tmp = po.transport / (prefix + "." + name)
        ctl_path = po.transport / (prefix + name)
        try:
            os.link(tmp, msg_path)  # never clobbers
            placed.append(msg_path)
            _write_file(ctl_tmp, control)
            placed.append(ctl_tmp)
            os.link(ctl_tmp, ctl_path)
        except FileExistsError:  # taken since we looked: undo and take the next
            for path in placed:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            placed.clear()
            continue
        placed.append(ctl_path)
        for path in (ctl_tmp, tmp):
            os.unlink(path)
        placed.remove(ctl_tmp)
        fsync_dir(msg_path.parent)
        fsync_dir(ctl_path.parent)
        return prefix + name
    raise SubmitError(f"no free spool name for i-node {inode}")


def submit(
    po: Postoffice,
    sender: str,
    recipients: Sequence[str | tuple[str, str, str]],
    message: bytes,
    *,
    hash_levels: int = 0,
    error_message: bool = False,
    notify: bool = True,
    extra_lines: Sequence[bytes] = (),
) -> str:
    """Queue ``message`` and return its relpath (``Q/I/123456``). Raises
    :class:`SubmitError` (and leaves nothing behind) on any failure."""
    rcpts = [parse_recipient(r) for r in recipients]
    if not rcpts:
        raise SubmitError("no recipients")
    headers, body_offset = split_headers(message)
    fd, tmpname = tempfile.mkstemp(prefix=".submit-", dir=po.public)
    tmp = Path(tmpname)
    placed: list[Path] = []
    try:
        try:
            os.fchmod(fd, 0o644)
            write_all(fd, message)
            os.fsync(fd)
            inode = os.fstat(fd).st_ino
        finally:
            os.close(fd)
        relpath = _place(
            po,
            tmp,
            int(inode),
            hash_levels,
            lambda name: build_control(
                name,
                sender,
                rcpts,
                headers,
                body_offset,
                error_message=error_message,
                extra_lines=extra_lines,
            ),
            placed,
        )
    except BaseException as exc:
        for path in (tmp, *placed):
            with contextlib.suppress(OSError):
                os.unlink(path)
        if isinstance(exc, OSError):
            raise SubmitError(f"cannot submit: {exc}") from exc
        raise
    log.info("submitted %s from <%s> to %d recipient(s)", relpath, sender, len(rcpts))
    if notify:
        notify_scheduler(po, relpath)
    return relpath

"""Submitting a message into ``router/``, where ZMailer's router takes it, as ZMailer's
agents do (so aliases and routing apply to bounces and released holds).

The file is an envelope (``from <a>`` or ``channel error``, ``via ...``, ``todsn ...``,
``to <b>``, ``env-end``), then the message. It is written to a temporary file in
``public/``, fsynced, and renamed to ``router/<i-node>`` (``router/<A-Z>/<i-node>`` with
``ROUTERDIRHASH=1``): the router sees the whole file or nothing. The router is then told
by a ``NEW router <name>`` datagram on ``ROUTERNOTIFY`` when that socket exists.

:func:`choose` decides between this and our direct ``transport/`` submission
(:mod:`spool.submit`, for sites without a router): ``--submit router|transport``, and by
default ``router`` exactly when ZMailer's router is installed (``$MAILBIN/router``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from collections.abc import Mapping, Sequence

from spool.layout import Postoffice
from spool.store import fsync_dir, write_all

__all__ = ["choose", "envelope", "submit_to_router", "xtext"]


def choose(option: str, zenv: Mapping[str, str]) -> str:
    """``router`` or ``transport`` for ``--submit option`` (``auto``: see the module)."""
    if option in ("router", "transport"):
        return option
    mailbin = zenv.get("MAILBIN", "")
    router = os.path.join(mailbin, "router")
    return "router" if mailbin and os.access(router, os.X_OK) else "transport"


def xtext(text: str) -> str:
    """RFC 3461 xtext."""
    return "".join(
        c if 33 <= ord(c) <= 126 and c not in "+=" else f"+{ord(c):02X}" for c in text
    )


def envelope(
    sender: str | None,
    recipients: Sequence[tuple[str, str]],
    *,
    via: str = "",
    errormsg: bool = False,
    envid: str | None = None,
    ret: str | None = None,
) -> bytes:
    """The envelope lines. ``sender`` None: ``channel error`` (the null sender);
    ``recipients``: ``(address, todsn parameters or "")``."""
    lines: list[str] = []
    if via:
        lines.append(f"via {via}")
    lines.append("channel error" if sender is None else f"from <{sender}>")
    if errormsg:
        lines.append("errormsg")
    if envid:
        lines.append(f"envid {envid}")
    if ret:
        lines.append(f"notaryret {ret}")
    for address, dsn in recipients:
        if dsn:
            lines.append(f"todsn {dsn}")
        lines.append(f"to <{address}>")
    lines.append("env-end")
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")


def submit_to_router(
    po: Postoffice, data: bytes, zenv: Mapping[str, str] | None = None
) -> str:
    """Write ``data`` (envelope + message) into ``router/``; return its name there."""
    zenv = zenv or {}
    public = os.fspath(po.public)
    fd, tmp = tempfile.mkstemp(
        prefix=f"{socket.gethostname()[:19]}:{os.getpid()}%", dir=public
    )
    try:
        write_all(fd, data)
        os.fsync(fd)
        ino = os.fstat(fd).st_ino
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    hashed = zenv.get("ROUTERDIRHASH", "").startswith("1")
    sub = f"{chr(ord('A') + ino % 26)}/" if hashed else ""
    name = f"{sub}{ino}"
    target = os.path.join(os.fspath(po.router), name)
    try:
        if hashed:
            os.makedirs(os.path.dirname(target), exist_ok=True)
        os.rename(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(os.path.dirname(target))
    _notify(zenv.get("ROUTERNOTIFY"), f"NEW router {name}")
    return name


def _notify(path: str | None, text: str) -> None:
    if not path or not os.path.exists(path):
        return
    with (
        contextlib.suppress(OSError),
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock,
    ):
        sock.setblocking(False)
        sock.sendto(text.encode(), path)

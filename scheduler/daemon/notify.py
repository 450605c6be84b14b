"""The new-file notify socket: AF_UNIX datagrams ``NEW <path>`` (SCHED-REF 3.5).

The router (or ``mailq-spool submit``) sends ``NEW <hashprefix><name>`` after renaming a
control file into ``transport/``. We accept only the path forms ``<n...>``, ``X/<n...>``
and ``X/Y/<n...>`` (``X``, ``Y`` in ``A``-``Z``, the name starting with ``1``-``9``, no
further ``/``); anything else is ignored. At most ``per_wakeup`` datagrams are read per
event-loop wake-up, so a flood cannot starve the loop. The socket file gets mode 0200
(S40, Keep: only its owner may send).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Final

__all__ = ["MAX_DATAGRAM", "NotifySocket", "notify_address", "parse_notification"]

logger = logging.getLogger(__name__)

MAX_DATAGRAM: Final = 999
_PATH: Final = re.compile(r"(?:[A-Z]/){0,2}[1-9][^/\s]*")


def parse_notification(datagram: bytes) -> str | None:
    """The relpath of a valid ``NEW <path>`` datagram, else None."""
    try:
        text = datagram.decode("ascii")
    except UnicodeDecodeError:
        return None
    text = text.rstrip("\0\r\n")
    if not text.startswith("NEW "):
        return None
    path = text[4:]
    return path if _PATH.fullmatch(path) else None


def notify_address(
    param: str | None, zenv_value: str | None, default: Path
) -> Path | None:
    """Where to bind: ``PARAMnotifysock``, else ZENV ``SCHEDULERNOTIFY``, else ``default``.

    ``UNIX:/path`` or ``/path`` mean AF_UNIX; anything else (UDP) is not implemented,
    as in ZMailer: None is returned and no socket is created.
    """
    spec = param or zenv_value
    if not spec:
        return default
    if spec[:5].upper() == "UNIX:":
        spec = spec[5:]
    if spec.startswith("/"):
        return Path(spec)
    logger.warning("notify socket %r is not an AF_UNIX path: not opened", spec)
    return None


class NotifySocket:
    """A bound datagram socket that hands each valid relpath to ``on_path``."""

    def __init__(
        self, path: Path, on_path: Callable[[str], None], *, per_wakeup: int = 10
    ) -> None:
        self.path = path
        self._on_path = on_path
        self._per_wakeup = per_wakeup
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Bind (replacing any file at the path) and start reading. Raises OSError."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            old = os.umask(0o577)
            try:
                sock.bind(str(self.path))
            finally:
                os.umask(old)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._loop = loop or asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._readable)

    def close(self) -> None:
        if self._sock is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._sock = None
        with contextlib.suppress(OSError):
            self.path.unlink()

    def _readable(self) -> None:
        assert self._sock is not None
        for _ in range(self._per_wakeup):
            try:
                datagram = self._sock.recv(MAX_DATAGRAM + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                logger.warning("notify socket read failed: %s", exc)
                return
            relpath = parse_notification(datagram[:MAX_DATAGRAM])
            if relpath is None:
                logger.debug("ignored notification %r", datagram[:80])
                continue
            self._on_path(relpath)

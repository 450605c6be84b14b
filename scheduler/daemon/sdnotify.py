"""systemd integration: ``sd_notify`` over ``NOTIFY_SOCKET``, the watchdog, exit codes.

* ``READY=1`` once the MAILQ v2 listeners are serving (the spool may still be loading:
  ``STATUS=`` says how far, and ``/ready`` answers 503 until it is done);
* ``STATUS=<text>`` whenever the status line changes (checked every second);
* ``WATCHDOG=1`` every ``WATCHDOG_USEC / 2`` while the scheduler loop runs, so systemd
  restarts a daemon whose event loop is wedged (``WatchdogSec=`` in the unit);
* ``STOPPING=1`` when the shutdown begins.

Without ``NOTIFY_SOCKET`` every call does nothing. The exit codes follow sysexits.h, so a
unit can say ``RestartPreventExitStatus=78``: a configuration error is not retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Mapping
from typing import Final

__all__ = [
    "EX_CONFIG",
    "EX_OK",
    "EX_SOFTWARE",
    "EX_UNAVAILABLE",
    "Notifier",
    "watchdog_interval",
]

logger = logging.getLogger(__name__)

EX_OK: Final = 0
EX_UNAVAILABLE: Final = 69  # a listener or the pid file could not be taken
EX_SOFTWARE: Final = 70
EX_CONFIG: Final = 78  # scheduler.conf, ZENV or the postoffice is unusable

STATUS_EVERY: Final = 1.0


def _address(env: Mapping[str, str]) -> str | None:
    path = env.get("NOTIFY_SOCKET", "")
    if not path or path[0] not in "/@":
        return None
    return "\0" + path[1:] if path[0] == "@" else path


def watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Half of ``WATCHDOG_USEC`` in seconds, if the watchdog is meant for this process."""
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) <= 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 2e6


class Notifier:
    """Send ``sd_notify`` datagrams; a no-op without ``NOTIFY_SOCKET``."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = _address(env)
        self.watchdog = watchdog_interval(env)
        self._sock: socket.socket | None = None
        self._status = ""
        self._task: asyncio.Task[None] | None = None
        if self.address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.set_inheritable(False)
        # transport agents must not talk to systemd in our name
        if env is os.environ:
            for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                os.environ.pop(name, None)

    def send(self, **fields: str | int) -> bool:
        """``send(READY=1, STATUS="...")``; False if it could not be sent."""
        if self._sock is None or self.address is None:
            return False
        text = "\n".join(f"{k}={v}" for k, v in fields.items())
        try:
            self._sock.sendto(text.encode(), self.address)
        except OSError as exc:
            logger.warning("sd_notify to %s failed: %s", self.address, exc)
            return False
        return True

    def status(self, text: str) -> None:
        if text != self._status:
            self._status = text
            self.send(STATUS=text)

    def start(self, status: Callable[[], str], alive: Callable[[], bool]) -> None:
        """``READY=1`` now; then ``STATUS=`` and ``WATCHDOG=1`` until :meth:`stop`."""
        if self._sock is None:
            return
        self._status = status()
        self.send(READY=1, STATUS=self._status, MAINPID=os.getpid())
        self._task = asyncio.get_running_loop().create_task(self._run(status, alive))

    async def _run(self, status: Callable[[], str], alive: Callable[[], bool]) -> None:
        every = min(STATUS_EVERY, self.watchdog or STATUS_EVERY)
        loop = asyncio.get_running_loop()
        next_ping = loop.time()
        while True:
            self.status(status())
            if self.watchdog is not None and loop.time() >= next_ping and alive():
                self.send(WATCHDOG=1)
                next_ping = loop.time() + self.watchdog
            await asyncio.sleep(every)

    def stop(self) -> None:
        """``STOPPING=1`` and the periodic task ended."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.send(STOPPING=1, STATUS="Shutting down")

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

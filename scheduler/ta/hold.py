"""The hold agent: ``python -m scheduler.ta.hold [-c hold]``.

Keeps recipients on the ``hold`` channel until their hold condition is released, then
moves them back to normal delivery. The condition is the recipient's *host* field:

``delay:<duration>``  (``delay:30m``, ``delay:1h30m``, ``delay:90``)
    released once the message file is older than the duration (arrival + duration).
``until:<epoch>``
    released at that Unix time.
anything else (``etrn:<domain>``, a plain domain, …)
    released whenever the agent is run for it. Configure such hold clauses ``queueonly``
    so that only an ETRN (which restarts the thread) runs the agent: that is the ETRN
    release of ZMailer's hold channel.

While held, the recipient is reported ``deferred`` with the text
``retryat +<seconds left> held until <RFC 822 date>`` (ZMailer's hold reports a retry
time; our scheduler retries at the clause's interval and the agent re-checks).

Release = the recipient address (the user field) is submitted again into the spool as a
copy of the message (``spool.submit``: ``user@domain`` → smtp, a bare name → local), with
the same sender, and the hold recipient is reported ``ok3`` (done, no success DSN: the
real delivery will report). ZMailer's hold re-injects through the router instead; we have
no router, so the copy goes straight to the transport queue.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email.utils import format_datetime

from scheduler.ta import libta
from scheduler.ta.libta import JobContext, OneByOne, Outcome
from spool.controlfile import Recipient
from spool.errors import SpoolError
from spool.submit import submit
from spool.timefmt import parse_duration

log = logging.getLogger(__name__)


def release_time(host: str, arrival: int) -> int | None:
    """When a hold condition is released (epoch), or ``None`` for "on any run" (ETRN).

    Raises ValueError for a malformed ``delay:``/``until:`` value.
    """
    kind, sep, value = host.partition(":")
    kind = kind.lower()
    if sep and kind == "delay":
        return arrival + parse_duration(value)
    if sep and kind == "until":
        return int(value)
    return None


class HoldAgent(OneByOne):
    """Hold or release each recipient."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock

    def deliver_one(self, ctx: JobContext, rcpt: Recipient) -> Outcome:
        now = int(self.clock())
        try:
            arrival = int(os.stat(ctx.message_path).st_mtime)
        except OSError:
            arrival = now
        try:
            when = release_time(rcpt.host, arrival)
        except ValueError:
            diag = f"x-local; 500 (bad hold condition {rcpt.host!r})"
            return Outcome("error", "5.3.5", diag)
        if when is not None and now < when:
            date = format_datetime(datetime.fromtimestamp(when, UTC))
            text = f"retryat +{when - now} held until {date}"
            return Outcome(
                "deferred", "4.0.0", f"x-local; 400 (held until {date})", message=text
            )
        return self._release(ctx, rcpt)

    def _release(self, ctx: JobContext, rcpt: Recipient) -> Outcome:
        cf = ctx.control
        header = cf.header_block(rcpt.header_offset) if rcpt.header_offset >= 0 else b""
        message = header.rstrip(b"\n") + b"\n\n" + ctx.message_body()
        sender = "" if cf.is_error_message else cf.error_address
        try:
            new = submit(
                ctx.options.postoffice,
                sender,
                [rcpt.user],
                message,
                hash_levels=ctx.relpath.count("/"),
                error_message=cf.is_error_message,
            )
        except (OSError, SpoolError) as exc:
            diag = f"x-local; 400 (cannot release: {getattr(exc, 'strerror', None) or exc})"
            return Outcome("deferred", "4.3.0", diag)
        log.info("%s: %s released from hold as %s", ctx.relpath, rcpt.user, new)
        return Outcome("ok3", "2.0.0", f"x-local; 250 (released from hold as {new})")


def parser() -> argparse.ArgumentParser:
    return libta.common_parser("hold", "Hold recipients until a time or an ETRN.")


def main(argv: Sequence[str] | None = None) -> int:
    libta.setup_logging("hold")
    args = libta.parse_args(parser(), argv)
    return libta.run_agent(libta.options_from(args, "hold"), HoldAgent())


if __name__ == "__main__":
    sys.exit(main())

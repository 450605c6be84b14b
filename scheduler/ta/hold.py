"""The hold agent: ``python -m scheduler.ta.hold [-c hold] [--submit router|transport]``.

Keeps recipients on the ``hold`` channel until their hold condition (the host field,
:mod:`scheduler.ta.holdconditions`: ``timeout:``, ``age:``, ``ns:``, ``io:``,
``script:``, ``home:`` as ZMailer's hold; ``delay:``, ``until:``, ``etrn:`` ours) lets
them go.

While held the recipient is reported ``deferred``; a time-based hold says when, as
``retryat +<seconds> held until <RFC 822 date>``. A condition without ``:`` fails
(error, as ZMailer's hold does).

Release = the address is submitted again with the same sender, envelope id, RET and
DSN parameters, and the hold recipient is reported done: ``ok3`` (ZMailer's report
after a release; ``ok2`` with action ``relayed`` when it asked NOTIFY=SUCCESS). Where
ZMailer's router is installed the copy goes through ``router/`` with ``via
suspension``, as ZMailer's hold does, so aliases and routing apply again
(:mod:`spool.routersubmit`); without a router it goes straight to
``transport/`` (:mod:`spool.submit`: ``user@domain`` -> smtp, a bare name -> local).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import format_datetime

from scheduler.ta import libta
from scheduler.ta.dns.resolver import Resolver, load_config
from scheduler.ta.holdconditions import Environment, check
from scheduler.ta.libta import JobContext, OneByOne, Outcome
from spool import routersubmit
from spool.controlfile import Recipient
from spool.errors import SpoolError
from spool.submit import submit
from spool.timefmt import parse_duration
from spool.zenv import read_zenv

log = logging.getLogger(__name__)

__all__ = ["HoldAgent", "release_time"]


def release_time(host: str, arrival: int) -> int | None:
    """When a time-based hold condition is released (epoch); None for other kinds.

    Raises ValueError for a malformed value.
    """
    kind, sep, value = host.lower().partition(":")
    if sep and kind in ("delay", "age"):
        return arrival + parse_duration(value)
    if sep and kind in ("until", "timeout"):
        return int(value)
    return None


class HoldAgent(OneByOne):
    """Hold or release each recipient."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        *,
        mode: str = "transport",
        zenv: Mapping[str, str] | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self.clock = clock
        self.mode = mode
        self.zenv = dict(zenv or {})
        self.resolver = resolver

    def deliver_one(self, ctx: JobContext, rcpt: Recipient) -> Outcome:
        now = int(self.clock())
        try:
            arrival = int(os.stat(ctx.message_path).st_mtime)
        except OSError:
            arrival = now
        env = Environment(now, arrival, self.resolver, self.zenv)
        verdict = check(rcpt.host, env)
        if verdict.bad:
            diag = f"x-local; 500 ({verdict.text} (this is abnormal, investigate!))"
            return Outcome("error", "5.0.0", diag)
        if not verdict.release:
            log.info("%s: %s stays held (%s)", ctx.relpath, rcpt.user, rcpt.host)
            return _held(verdict.text, verdict.until, now)
        return self._release(ctx, rcpt)

    def _release(self, ctx: JobContext, rcpt: Recipient) -> Outcome:
        cf = ctx.control
        header = cf.header_block(rcpt.header_offset) if rcpt.header_offset >= 0 else b""
        message = header.rstrip(b"\n") + b"\n\n" + ctx.message_body()
        sender = "" if cf.is_error_message else cf.error_address
        try:
            if self.mode == "router":
                new = self._to_router(ctx, rcpt, sender, message)
            else:
                new = submit(
                    ctx.options.postoffice,
                    sender,
                    [rcpt.user],
                    message,
                    hash_levels=ctx.relpath.count("/"),
                    error_message=cf.is_error_message,
                )
        except (OSError, SpoolError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            diag = (
                f"x-local; 400 (Cannot resubmit anything, out of spool space? {reason})"
            )
            return Outcome("deferred", "4.3.1", diag)
        log.info("%s: %s released from hold as %s", ctx.relpath, rcpt.user, new)
        diag = "x-local; 250 (Relayed via deferral channel)"
        if "SUCCESS" in rcpt.notify:
            return Outcome("ok", "2.2.0", diag, action="relayed")
        return Outcome("ok3", "2.2.0", diag, action="relayed")

    def _to_router(
        self, ctx: JobContext, rcpt: Recipient, sender: str, message: bytes
    ) -> str:
        cf = ctx.control
        dsn = []
        if rcpt.orcpt:
            dsn.append(f"ORCPT={rcpt.orcpt}")
        if rcpt.dsn_offset >= 0 and rcpt.notify:
            dsn.append("NOTIFY=" + ",".join(sorted(rcpt.notify)))
        env = routersubmit.envelope(
            None if cf.is_error_message else sender,
            [(rcpt.user, " ".join(dsn))],
            via="suspension",
            envid=cf.envid,
            ret=cf.ret,
        )
        return routersubmit.submit_to_router(
            ctx.options.postoffice, env + message, self.zenv
        )


def _held(text: str, until: int | None, now: int) -> Outcome:
    if until is None:
        diag = "x-local; 466 (Temporary routing lookup failure)"
        return Outcome("deferred", "4.4.3", diag, message=text)
    date = format_datetime(datetime.fromtimestamp(until, UTC))
    return Outcome(
        "deferred",
        "4.4.3",
        f"x-local; 400 (held until {date})",
        message=f"retryat +{until - now} held until {date}",
    )


def parser() -> argparse.ArgumentParser:
    p = libta.common_parser("hold", "Hold recipients until their condition is met.")
    p.add_argument(
        "--submit",
        choices=("auto", "router", "transport"),
        default="auto",
        help="where released copies go (auto: router/ when ZMailer's router exists)",
    )
    p.add_argument("--resolver", default=None, help="DNS server HOST:PORT for ns:")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    libta.setup_logging("hold")
    args = libta.parse_args(parser(), argv)
    try:
        zenv = read_zenv()
    except OSError as exc:
        log.error("cannot read zmailer.conf: %s", exc)
        return 78
    agent = HoldAgent(
        mode=routersubmit.choose(args.submit, zenv),
        zenv=zenv,
        resolver=Resolver(load_config(args.resolver)),
    )
    return libta.run_agent(libta.options_from(args, "hold"), agent)


if __name__ == "__main__":
    sys.exit(main())

"""The errormail agent: ``python -m scheduler.ta.errormail [-c error]``.

Recipients on the ``error`` channel are addresses the router could not handle; the host
field names the reason (for example ``nosuchuser``) and the user field is the address.
For each one the agent builds an RFC 3464 bounce with :func:`spool.dsn.build_dsn`,
submits it from the null sender to the message's error address (postmaster for pipes
and files), and reports ``ok3`` ("done, no success DSN wanted": the recipient's
outcome *is* the bounce). A message that is itself a bounce is never bounced again
(no loops): the failure is logged and the recipient reported ``ok3`` as well.

Where ZMailer's router is installed the bounce goes through ``router/`` (envelope
``channel error``, ``errormsg``, ``todsn NOTIFY=NEVER ORCPT=RFC822;...``), as ZMailer's
errormail does, so aliases and routing apply to it; otherwise straight into
``transport/`` (``--submit`` chooses; :mod:`spool.routersubmit`).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time
from collections.abc import Mapping, Sequence

from scheduler.ta import libta
from scheduler.ta.libta import JobContext, OneByOne, Outcome
from spool import dsn, routersubmit
from spool.controlfile import Recipient
from spool.errors import SpoolError
from spool.ids import message_number, spool_id
from spool.submit import submit
from spool.zenv import read_zenv

log = logging.getLogger(__name__)


def bounce_entry(rcpt: Recipient, now: int, taname: str) -> dsn.DsnEntry:
    """The DSN entry for one error-channel recipient."""
    reason = rcpt.host or "unknown error"
    return dsn.DsnEntry(
        action="failed",
        final_recipient=rcpt.user,
        status="5.0.0",
        diagnostic=f"x-local; 500 (error channel: {reason})",
        last_attempt=now,
        taname=taname,
        orcpt=rcpt.orcpt,
        control_data=rcpt.quad,
        message=f"address {rcpt.user} could not be routed: {reason}",
        header_offset=rcpt.header_offset,
    )


class ErrorMailAgent(OneByOne):
    """Bounce every recipient it is given."""

    def __init__(
        self,
        hostname: str,
        mode: str = "transport",
        zenv: Mapping[str, str] | None = None,
    ) -> None:
        self.hostname = hostname
        self.taname = f"errormail[{os.getpid()}]"
        self.mode = mode
        self.zenv = dict(zenv or {})

    def deliver_one(self, ctx: JobContext, rcpt: Recipient) -> Outcome:
        cf = ctx.control
        now = int(time.time())
        if cf.is_error_message or not cf.error_address:
            log.warning(
                "%s: double fault for %s, no bounce sent", ctx.relpath, rcpt.user
            )
            return Outcome(
                "ok3", "5.0.0", "x-local; 500 (double fault, bounce dropped)"
            )
        try:
            st = os.stat(ctx.message_path)
            body: bytes | None = ctx.message_body()
            arrival = int(st.st_mtime)
            ns = st.st_mtime_ns % 1_000_000_000
        except OSError:
            body, arrival, ns = None, now, 0
        number = message_number(ctx.relpath.rpartition("/")[2])
        to = dsn.dsn_recipient(cf.error_address)
        message = dsn.build_dsn(
            cf,
            [bounce_entry(rcpt, now, self.taname)],
            spool_id=spool_id(number, arrival, ns),
            arrival=arrival,
            hostname=self.hostname,
            body=body,
            now=now,
            to=to,
        )
        po = ctx.options.postoffice
        levels = ctx.relpath.count("/")
        try:
            if self.mode == "router":
                params = f"NOTIFY=NEVER ORCPT=RFC822;{routersubmit.xtext(to)}"
                env = routersubmit.envelope(None, [(to, params)], errormsg=True)
                new = routersubmit.submit_to_router(po, env + message, self.zenv)
            else:
                new = submit(
                    po, "", [to], message, hash_levels=levels, error_message=True
                )
        except (OSError, SpoolError) as exc:
            diag = f"x-local; 400 (cannot submit the bounce: {getattr(exc, 'strerror', None) or exc})"
            return Outcome("deferred", "4.3.0", diag)
        log.info(
            "%s: bounce for %s submitted as %s to <%s>", ctx.relpath, rcpt.user, new, to
        )
        return Outcome("ok3", "2.0.0", f"x-local; 250 (bounce sent to <{to}> as {new})")


def parser() -> argparse.ArgumentParser:
    p = libta.common_parser(
        "errormail", "Bounce the recipients of the error channel.", "error"
    )
    p.add_argument("--hostname", default=None, help="host name in the bounces")
    p.add_argument(
        "--submit",
        choices=("auto", "router", "transport"),
        default="auto",
        help="where bounces go (auto: router/ when ZMailer's router exists)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    libta.setup_logging("errormail")
    args = libta.parse_args(parser(), argv)
    options = libta.options_from(args, "errormail")
    try:
        zenv = read_zenv()
    except OSError as exc:
        log.error("cannot read zmailer.conf: %s", exc)
        return 78
    mode = routersubmit.choose(args.submit, zenv)
    agent = ErrorMailAgent(args.hostname or socket.getfqdn(), mode, zenv)
    return libta.run_agent(options, agent)


if __name__ == "__main__":
    sys.exit(main())

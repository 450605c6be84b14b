"""The smtp transport agent: ``python -m scheduler.ta.smtp [options] [host]``.

For each job it finds where the thread's host takes mail (:mod:`scheduler.ta.dns`:
MX by preference, implicit MX, null MX, address literals, the router's ``(mx1 mx2)``
lists; or a relay ``-F`` / a route map), tries each MX's IPv6 then IPv4 addresses until
one greets with 2xx, and delivers every recipient of the message in one transaction per
``m`` header block. The session stays open while the scheduler keeps feeding jobs for
the same host (``RSET`` between messages) and ends with ``QUIT`` at ``#idle``, at the end,
or when the host changes.

ESMTP: EHLO (HELO fallback), STARTTLS (opportunistic; ``--require-tls`` or a
``--tls-policy`` file make it mandatory, ``verify`` also checks the certificate against
the MX name), PIPELINING, SIZE (too big: permanent 5.3.4 before MAIL), 8BITMIME and
SMTPUTF8 (needed but absent: permanent 5.6.3 / 5.6.7), DSN parameters from the control
file. Time-outs per RFC 5321 4.5.3.2, configurable (``--timeouts``).

Replies: 2xx ok, 4xx deferred, 5xx error; diagnostics read like ZMailer's
(``smtp; 550 (5.1.1 <x@y>... User unknown)``). A success for a recipient that asked
NOTIFY=SUCCESS is ``ok3`` when the server took the DSN duty (it offered DSN), else
``ok2`` with action ``relayed``, as ZMailer's smtp reports. When no host can be reached
every recipient is deferred with ZMailer's text ``smtp; 500 (connect to H
[ip|port|localip|localport]: reason)``, the last one ``deferall``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scheduler.ta import libta
from scheduler.ta.dns import destinations
from scheduler.ta.dns.destinations import Hop, Unroutable
from scheduler.ta.dns.resolver import Resolver, load_config
from scheduler.ta.libta import Job, JobContext, Outcome
from scheduler.ta.smtpsession import (
    SmtpFailure,
    SmtpSession,
    Timeouts,
    TlsPolicy,
    open_session,
)
from scheduler.ta.smtpwire import Reply, message_bytes
from spool.controlfile import Recipient
from spool.timefmt import parse_duration

__all__ = [
    "Settings",
    "SmtpAgent",
    "load_route_map",
    "load_tls_policy",
    "main",
    "message_bytes",
    "route_for",
    "split_hostport",
]

log = logging.getLogger(__name__)

_NOTIFY_ORDER = ("SUCCESS", "FAILURE", "DELAY")


@dataclass(slots=True)
class Settings:
    heloname: str
    relay: str | None = None
    port: int = 25
    routes: dict[str, tuple[str, int | None]] = field(default_factory=dict)
    require_tls: bool = False
    tls_ca: str | None = None
    tls_policy: dict[str, str] = field(default_factory=dict)
    timeouts: Timeouts = field(default_factory=Timeouts)
    resolver: Resolver | None = None
    reuse: bool = True
    use_mx: bool = True


def split_hostport(text: str) -> tuple[str, int | None]:
    """``host``, ``host:25``, ``[1.2.3.4]:25``, ``[::1]`` -> (host, port or None)."""
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[: end + 1], text[end + 1 :]
        return host, int(rest[1:]) if rest.startswith(":") else None
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, int(port)
    return text, None


def _read_map(path: str, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) != 2:
            raise ValueError(f"{path}:{number}: expected 'domain {what}'")
        out[words[0].lower()] = words[1]
    return out


def load_route_map(path: str) -> dict[str, tuple[str, int | None]]:
    """Lines ``domain relayhost[:port]``; ``#`` comments; ``.domain`` matches subdomains."""
    return {
        k: split_hostport(v) for k, v in _read_map(path, "relayhost[:port]").items()
    }


def load_tls_policy(path: str) -> dict[str, str]:
    """Lines ``domain may|encrypt|verify``; ``.domain`` matches subdomains."""
    policy = _read_map(path, "may|encrypt|verify")
    for domain, level in policy.items():
        if level not in ("may", "encrypt", "verify"):
            raise ValueError(f"{path}: bad TLS level {level!r} for {domain}")
    return policy


def _by_domain(table: dict[str, object], host: str) -> object | None:
    low = host.lower()
    if low in table:
        return table[low]
    for domain, value in table.items():
        if domain.startswith(".") and low.endswith(domain):
            return value
    return None


def route_for(host: str, settings: Settings) -> tuple[str, int] | None:
    """The explicit next hop for ``host`` (route map, then relay), or None (use DNS)."""
    route = _by_domain(settings.routes, host)  # type: ignore[arg-type]
    if route is None and settings.relay:
        route = split_hostport(settings.relay)
    if route is None:
        return None
    assert isinstance(route, tuple)
    return route[0], route[1] or settings.port


def tls_level(host: str, settings: Settings) -> str:
    level = _by_domain(settings.tls_policy, host)  # type: ignore[arg-type]
    if isinstance(level, str):
        return level
    return "verify" if settings.require_tls else "may"


def _relay_hops(target: str) -> list[Hop]:
    """Hops for an explicit relay: a literal, else the system's name lookup."""
    literal = destinations.literal_address(target)
    if literal is not None:
        return [Hop(target[1:-1], (literal,))]
    try:
        infos = socket.getaddrinfo(target, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise Unroutable(
            False, "4.4.3", f"lookup of {target} failed: {exc.strerror}"
        ) from exc
    return [Hop(target, tuple(dict.fromkeys(str(i[4][0]) for i in infos)))]


class SmtpAgent:
    """The smtp deliverer (batch: every recipient of a job at once)."""

    batch = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.resolver = settings.resolver or Resolver(load_config())
        self.session: SmtpSession | None = None
        self.session_key: str = ""

    def begin_job(self, job: Job) -> None:
        return None

    def idle(self) -> None:
        """No more work for now: end the open session politely."""
        if self.session is not None:
            self.session.quit()
            self.session.close()
            self.session = None

    def deliver(
        self, ctx: JobContext, recipients: Sequence[Recipient]
    ) -> list[Outcome]:
        host = ctx.job.host or recipients[0].host
        try:
            session = self._session_for(host)
        except Unroutable as exc:
            return _all_unroutable(exc, len(recipients))
        except SmtpFailure as exc:
            log.info("%s: %s", ctx.relpath, exc.outcome.diagnostic)
            return _all_failed(exc.outcome, len(recipients), deferall=exc.connect)
        results: dict[int, Outcome] = {}
        try:
            for group in _by_header(recipients):
                results.update(self._transaction(session, ctx, group))
        except SmtpFailure as exc:
            for r in recipients:
                results.setdefault(r.offset, exc.outcome)
            session.close()
            self.session = None
        if not self.settings.reuse:
            self.idle()
        return [results[r.offset] for r in recipients]

    def _session_for(self, host: str) -> SmtpSession:
        key = host.lower()
        old = self.session
        if old is not None and key == self.session_key:
            if old.reset():
                return old
            old.close()
        elif old is not None:
            self.idle()
        self.session = None
        route = route_for(host, self.settings)
        if route is not None:
            hops, port = _relay_hops(route[0]), route[1]
        else:
            hops = self.loop.run_until_complete(
                destinations.plan(host, self.resolver, use_mx=self.settings.use_mx)
            )
            port = self.settings.port
        policy = TlsPolicy(tls_level(host, self.settings), self.settings.tls_ca)
        session = open_session(
            hops, port, self.settings.heloname, self.settings.timeouts, policy
        )
        self.session, self.session_key = session, key
        return session

    def _transaction(
        self, s: SmtpSession, ctx: JobContext, rcpts: list[Recipient]
    ) -> dict[int, Outcome]:
        cf = ctx.control
        header = (
            cf.header_block(rcpts[0].header_offset)
            if rcpts[0].header_offset >= 0
            else b""
        )
        payload = message_bytes(header, ctx.message_body())
        sender = _sender(ctx)
        refusal = _refuse(s, payload, sender, rcpts)
        if refusal is not None:
            return {r.offset: refusal for r in rcpts}
        dsn = "DSN" in s.extensions
        cmds = [_mail_cmd(s, ctx, sender, payload, rcpts, dsn)]
        cmds += [_rcpt_cmd(r, dsn) for r in rcpts]
        if "PIPELINING" in s.extensions:
            replies = s.pipeline([*cmds, "DATA"])
            data_reply: Reply | None = replies.pop()
        else:
            replies = [s.command(cmds[0], s.timeouts.mail)]
            if replies[0].code // 100 == 2:
                replies += [s.command(c, s.timeouts.rcpt) for c in cmds[1:]]
            data_reply = None
        return self._finish(s, rcpts, replies, data_reply, payload, dsn)

    def _finish(
        self,
        s: SmtpSession,
        rcpts: list[Recipient],
        replies: list[Reply],
        data_reply: Reply | None,
        payload: bytes,
        dsn: bool,
    ) -> dict[int, Outcome]:
        if replies[0].code // 100 != 2:
            s.abandon(data_reply)
            return {r.offset: replies[0].outcome(s.remote) for r in rcpts}
        out: dict[int, Outcome] = {}
        accepted: list[Recipient] = []
        for r, reply in zip(rcpts, replies[1:], strict=True):
            if reply.code // 100 == 2:
                accepted.append(r)
            else:
                out[r.offset] = reply.outcome(s.remote)
        if not accepted:
            s.abandon(data_reply)
            return out
        if data_reply is None:
            data_reply = s.command("DATA", s.timeouts.data)
        if data_reply.code != 354:
            return out | {r.offset: data_reply.outcome(s.remote) for r in accepted}
        final = s.send_data(payload)
        for r in accepted:
            outcome = final.outcome(s.remote)
            if outcome.status == "ok" and "SUCCESS" in r.notify:
                if dsn:  # the server took the success-DSN duty: ZMailer's ok3
                    outcome = Outcome("ok3", outcome.dsn_status, outcome.diagnostic,
                                      remote_mta=s.remote)  # fmt: skip
                else:
                    outcome = Outcome("ok", outcome.dsn_status, outcome.diagnostic,
                                      remote_mta=s.remote, action="relayed")  # fmt: skip
            out[r.offset] = outcome
        return out


def _all_failed(outcome: Outcome, n: int, deferall: bool) -> list[Outcome]:
    outs = [outcome] * n
    if deferall and outcome.status == "deferred":
        outs[-1] = Outcome(
            "deferall",
            outcome.dsn_status,
            outcome.diagnostic,
            remote_mta=outcome.remote_mta,
        )
    return outs


def _all_unroutable(exc: Unroutable, n: int) -> list[Outcome]:
    if exc.permanent:
        code = "556" if exc.status == "5.1.10" else "550"
        diag = f"smtp; {code} ({exc.status} {exc.reason})"
        return [Outcome("error", exc.status, diag)] * n
    diag = f"smtp; 400 ({exc.status} {exc.reason})"
    return _all_failed(Outcome("deferred", exc.status, diag), n, deferall=True)


def _refuse(
    s: SmtpSession, payload: bytes, sender: str, rcpts: list[Recipient]
) -> Outcome | None:
    """A permanent failure decided before MAIL (size, 8-bit, UTF-8), or None."""
    ext = s.extensions
    limit = ext.get("SIZE", "").strip()
    if limit.isdigit() and 0 < int(limit) < len(payload):
        diag = (f"smtp; 552 (5.3.4 message size {len(payload)} exceeds the limit "
                f"{limit} of {s.remote})")  # fmt: skip
        return Outcome("error", "5.3.4", diag, remote_mta=s.remote)
    if not (sender.isascii() and all(r.user.isascii() for r in rcpts)):
        if "SMTPUTF8" not in ext:
            diag = f"smtp; 553 (5.6.7 {s.remote} does not offer SMTPUTF8 for a UTF-8 address)"
            return Outcome("error", "5.6.7", diag, remote_mta=s.remote)
    elif not payload.isascii() and "8BITMIME" not in ext and "SMTPUTF8" not in ext:
        diag = f"smtp; 554 (5.6.3 {s.remote} does not offer 8BITMIME for 8-bit content)"
        return Outcome("error", "5.6.3", diag, remote_mta=s.remote)
    return None


def _mail_cmd(
    s: SmtpSession,
    ctx: JobContext,
    sender: str,
    payload: bytes,
    rcpts: list[Recipient],
    dsn: bool,
) -> str:
    cf = ctx.control
    mail = f"MAIL FROM:<{sender}>"
    if "SIZE" in s.extensions:
        mail += f" SIZE={len(payload)}"
    if not payload.isascii() and "8BITMIME" in s.extensions:
        mail += " BODY=8BITMIME"
    if not (sender.isascii() and all(r.user.isascii() for r in rcpts)):
        mail += " SMTPUTF8"
    if dsn and cf.ret:
        mail += f" RET={cf.ret.upper()}"
    if dsn and cf.envid:
        mail += f" ENVID={cf.envid}"
    return mail


def _by_header(rcpts: Sequence[Recipient]) -> list[list[Recipient]]:
    groups: dict[int, list[Recipient]] = {}
    for r in rcpts:
        groups.setdefault(r.header_offset, []).append(r)
    return list(groups.values())


def _sender(ctx: JobContext) -> str:
    cf = ctx.control
    if cf.is_error_message:
        return ""
    if cf.sender is not None and cf.sender[0].lower() != "error":
        return cf.sender[2] or cf.error_address
    return cf.error_address


def _xtext_safe(text: str) -> str:
    return "".join(
        c if 33 <= ord(c) <= 126 and c not in "+=" else f"+{ord(c):02X}" for c in text
    )


def _rcpt_cmd(r: Recipient, dsn: bool) -> str:
    cmd = f"RCPT TO:<{r.user}>"
    if dsn and r.dsn_offset >= 0:
        if "NEVER" in r.notify:
            cmd += " NOTIFY=NEVER"
        else:
            words = [w for w in _NOTIFY_ORDER if w in r.notify]
            if words:
                cmd += " NOTIFY=" + ",".join(words)
        if r.orcpt:
            kind, sep, value = r.orcpt.partition(";")
            cmd += (
                f" ORCPT={kind};{value}"
                if sep
                else f" ORCPT=rfc822;{_xtext_safe(r.orcpt)}"
            )
    return cmd


_TIMEOUT_KEYS = re.compile(
    r"^(connect|greeting|mail|rcpt|data|block|dot)=(\d+(\.\d+)?)$"
)


_ZMAILER_T = {
    "conn": ("connect",),
    "cmd": ("greeting", "mail", "rcpt", "data"),
    "data": ("block",),
    "tcpw": ("block",),
    "dot": ("dot",),
}


def zmailer_timeouts(t: Timeouts, values: Sequence[str]) -> None:
    """ZMailer's ``-T [conn=|cmd=|data=|tcpw=|dot=]interval`` (plain = cmd)."""
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep:
            key, rest = "cmd", value
        if key.lower() not in _ZMAILER_T:
            raise ValueError(f"bad -T {value!r}")
        seconds = float(parse_duration(rest))
        for phase in _ZMAILER_T[key.lower()]:
            setattr(t, phase, seconds)


def parse_timeouts(
    text: str | None, every: float | None, zmailer: Sequence[str] = ()
) -> Timeouts:
    """``--timeout S`` sets every phase, ``-T`` as ZMailer's, then ``--timeouts
    greeting=300,dot=600`` each one."""
    t = Timeouts()
    if every is not None:
        t = Timeouts(*([every] * 7))
    zmailer_timeouts(t, zmailer)
    for item in (text or "").replace(" ", "").split(","):
        if not item:
            continue
        m = _TIMEOUT_KEYS.match(item)
        if not m:
            raise ValueError(f"bad time-out {item!r} (want phase=seconds)")
        setattr(t, m.group(1), float(m.group(2)))
    return t


def parser() -> argparse.ArgumentParser:
    p = libta.common_parser("smtp", "SMTP transport agent.")
    p.add_argument("-h", "--helo", dest="helo", default=None, help="HELO/EHLO name")
    p.add_argument(
        "-F", "--relay", dest="relay", default=None, help="relay host ([ip] or name)"
    )
    p.add_argument("-p", "--port", dest="port", type=int, default=25)
    p.add_argument("-s", dest="s_flag", action="store_true", help="accepted (ZMailer)")
    p.add_argument(
        "-x", dest="no_mx", action="store_true", help="no MX lookup (ZMailer's -x)"
    )
    p.add_argument(
        "-T", dest="zm_timeouts", action="append", default=[],
        help="ZMailer time-out: [conn=|cmd=|data=|tcpw=|dot=]interval",
    )  # fmt: skip
    p.add_argument(
        "--route-map", default=None, help="file of 'domain relayhost[:port]'"
    )
    p.add_argument("--resolver", default=None, help="DNS server HOST:PORT to ask")
    p.add_argument("--require-tls", action="store_true")
    p.add_argument(
        "--tls-policy", default=None, help="file of 'domain may|encrypt|verify'"
    )
    p.add_argument("--tls-ca", default=None, help="CA file for certificate checks")
    p.add_argument("--timeout", type=float, default=None, help="every time-out (s)")
    p.add_argument(
        "--timeouts", default=None, help="per phase: greeting=300,mail=300,..."
    )
    p.add_argument("--no-reuse", action="store_true", help="one session per message")
    libta.ignore_flags(p, "1678")
    libta.ignore_options_with_argument(p, "AlwLOSZ")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    libta.setup_logging("smtp")
    args = libta.parse_args(parser(), argv)
    options = libta.options_from(args, "smtp")
    try:
        routes = load_route_map(args.route_map) if args.route_map else {}
        policy = load_tls_policy(args.tls_policy) if args.tls_policy else {}
        timeouts = parse_timeouts(args.timeouts, args.timeout, args.zm_timeouts)
    except (OSError, ValueError) as exc:
        log.error("configuration: %s", exc)
        return 78
    settings = Settings(
        heloname=args.helo or socket.getfqdn(),
        relay=args.relay,
        port=args.port,
        routes=routes,
        require_tls=args.require_tls,
        tls_ca=args.tls_ca,
        tls_policy=policy,
        timeouts=timeouts,
        resolver=Resolver(load_config(args.resolver)),
        reuse=not args.no_reuse,
        use_mx=not args.no_mx,
    )
    agent = SmtpAgent(settings)
    try:
        return libta.run_agent(options, agent)
    finally:
        agent.loop.close()


if __name__ == "__main__":
    sys.exit(main())

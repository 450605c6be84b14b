"""The smtp transport agent: ``python -m scheduler.ta.smtp [options] [host]``.

Delivers all recipients of one message for the job's host in one SMTP transaction (one
per distinct ``m`` header block), to the host's A/AAAA addresses (``getaddrinfo``, tried
in order; ``[ip]`` literals), to a relay (``-F``) or by a route map. EHLO (HELO fallback),
STARTTLS when offered (opportunistic; required with ``--require-tls``), PIPELINING, SIZE,
8BITMIME and the DSN parameters. Replies: 2xx ok, 4xx deferred, 5xx error; diagnostics
read like ZMailer's (``smtp; 550 (5.1.1 <x@y>... User unknown)``).

On a connection failure every recipient of the job is reported ``deferred`` with
ZMailer's text ``smtp; 500 (connect to H [ip|port|localip|localport]: reason)``, and the
last one ``deferall``, so the scheduler stops feeding this host and defers the rest of the
thread with the same diagnostic, as ZMailer's smtp does.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import socket
import ssl
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scheduler.ta import libta
from scheduler.ta.libta import Job, JobContext, Outcome
from spool.controlfile import Recipient

log = logging.getLogger(__name__)

_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\b")
_NOTIFY_ORDER = ("SUCCESS", "FAILURE", "DELAY")


class SmtpFailure(Exception):
    """The session failed as a whole: every undecided recipient gets ``outcome``."""

    def __init__(self, outcome: Outcome, connect: bool = False) -> None:
        super().__init__(outcome.diagnostic)
        self.outcome = outcome
        self.connect = connect


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(line for line in self.lines if line)

    def diagnostic(self) -> str:
        return f"smtp; {self.code} ({self.text})"

    def dsn_status(self) -> str:
        m = _ENHANCED.match(self.text)
        if m and m.group(1)[0] == str(self.code)[0]:
            return m.group(1)
        return f"{str(self.code)[0]}.0.0"

    def outcome(self, remote: str, ok_action: str = "") -> Outcome:
        diag = self.diagnostic()
        if 200 <= self.code < 300:
            return Outcome(
                "ok", self.dsn_status(), diag, remote_mta=remote, action=ok_action
            )
        if 500 <= self.code < 600:
            return Outcome("error", self.dsn_status(), diag, remote_mta=remote)
        return Outcome("deferred", self.dsn_status(), diag, remote_mta=remote)


@dataclass(slots=True)
class Settings:
    heloname: str
    relay: str | None = None
    port: int = 25
    routes: dict[str, tuple[str, int | None]] = field(default_factory=dict)
    require_tls: bool = False
    tls_ca: str | None = None
    timeout: float = 300.0


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


def load_route_map(path: str) -> dict[str, tuple[str, int | None]]:
    """Lines ``domain relayhost[:port]``; ``#`` comments; ``.domain`` matches subdomains."""
    routes: dict[str, tuple[str, int | None]] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) != 2:
            raise ValueError(f"{path}:{number}: expected 'domain relayhost[:port]'")
        routes[words[0].lower()] = split_hostport(words[1])
    return routes


def route_for(host: str, settings: Settings) -> tuple[str, int]:
    """Where to connect for mail to ``host``: route map, relay, or the host itself."""
    low = host.lower()
    route = settings.routes.get(low)
    if route is None:
        for domain, target in settings.routes.items():
            if domain.startswith(".") and low.endswith(domain):
                route = target
                break
    if route is None and settings.relay:
        route = split_hostport(settings.relay)
    if route is None:
        route = (host, None)
    return route[0], route[1] or settings.port


def connect_label(target: str) -> str:
    return target[1:-1] if target.startswith("[") and target.endswith("]") else target


def open_connection(
    target: str, port: int, timeout: float
) -> tuple[socket.socket, str]:
    """Try every address of ``target`` in order; raise :class:`SmtpFailure` (connect)."""
    name = connect_label(target)
    try:
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        diag = f"smtp; 500 (DNS lookup of {name} failed: {exc.strerror})"
        raise SmtpFailure(Outcome("deferred", "4.4.3", diag), connect=True) from exc
    last = ""
    for family, kind, proto, _, addr in infos:
        sock = socket.socket(family, kind, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(addr)
        except OSError as exc:
            local = _local(sock)
            reason = exc.strerror or str(exc) or type(exc).__name__
            ip = str(addr[0])
            last = f"connect to {name} [{ip}|{port}|{local}]: {reason}"
            sock.close()
            continue
        return sock, str(addr[0])
    diag = f"smtp; 500 ({last})"
    raise SmtpFailure(Outcome("deferred", "4.4.1", diag, remote_mta=name), connect=True)


def _local(sock: socket.socket) -> str:
    try:
        host, port = sock.getsockname()[:2]
    except OSError:
        return "|"
    return f"{host}|{port}"


class SmtpSession:
    """A blocking SMTP client session on one socket."""

    def __init__(
        self, sock: socket.socket, remote: str, settings: Settings, host: str
    ) -> None:
        self.sock = sock
        self.remote = remote
        self.settings = settings
        self.host = host
        self.file = sock.makefile("rb")
        self.extensions: dict[str, str] = {}
        self.tls = False

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise self._lost(exc) from exc

    def _lost(self, exc: BaseException) -> SmtpFailure:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        diag = f"smtp; 500 (connection to {self.remote} lost: {reason})"
        return SmtpFailure(Outcome("deferred", "4.4.2", diag, remote_mta=self.remote))

    def reply(self) -> Reply:
        lines: list[str] = []
        try:
            while True:
                raw = self.file.readline(4096)
                if not raw:
                    raise ConnectionError("connection closed by the server")
                text = raw.decode("utf-8", "replace").rstrip("\r\n")
                if len(text) < 3 or not text[:3].isdigit():
                    raise ConnectionError(f"bad reply line {text[:80]!r}")
                lines.append(text[4:])
                if text[3:4] != "-":
                    return Reply(int(text[:3]), tuple(lines))
        except (OSError, ConnectionError) as exc:
            raise self._lost(exc) from exc

    def command(self, line: str) -> Reply:
        self.send(line.encode("utf-8", "surrogateescape") + b"\r\n")
        return self.reply()

    def fail_unless(self, reply: Reply, ok: int) -> None:
        if reply.code // 100 != ok:
            raise SmtpFailure(reply.outcome(self.remote))

    def greet(self) -> None:
        self.fail_unless(self.reply(), 2)
        self.ehlo()
        if "STARTTLS" in self.extensions:
            self.starttls()
        elif self.settings.require_tls:
            diag = f"smtp; 500 ({self.remote} does not offer STARTTLS, TLS required)"
            raise SmtpFailure(
                Outcome("deferred", "4.7.0", diag, remote_mta=self.remote)
            )

    def ehlo(self) -> None:
        reply = self.command(f"EHLO {self.settings.heloname}")
        if reply.code // 100 == 2:
            self.extensions = {}
            for line in reply.lines[1:]:
                word, _, rest = line.partition(" ")
                self.extensions[word.upper()] = rest
            return
        reply = self.command(f"HELO {self.settings.heloname}")
        self.fail_unless(reply, 2)
        self.extensions = {}

    def starttls(self) -> None:
        reply = self.command("STARTTLS")
        if reply.code != 220:
            if self.settings.require_tls:
                diag = reply.diagnostic()
                raise SmtpFailure(
                    Outcome("deferred", "4.7.0", diag, remote_mta=self.remote)
                )
            return
        ctx = ssl.create_default_context(cafile=self.settings.tls_ca)
        if not self.settings.require_tls:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        try:
            self.file.close()
            self.sock = ctx.wrap_socket(
                self.sock, server_hostname=connect_label(self.host)
            )
        except (ssl.SSLError, OSError) as exc:
            diag = f"smtp; 500 (TLS negotiation with {self.remote} failed: {exc})"
            raise SmtpFailure(
                Outcome("deferred", "4.7.0", diag, remote_mta=self.remote)
            ) from exc
        self.file = self.sock.makefile("rb")
        self.tls = True
        self.ehlo()

    def quit(self) -> None:
        with contextlib.suppress(SmtpFailure):
            self.command("QUIT")


def message_bytes(header: bytes, body: bytes) -> bytes:
    """The DATA payload: headers + empty line + body, CRLF line ends, dot-stuffed."""
    text = header.rstrip(b"\n") + b"\n\n" + body
    lines = text.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    stuffed = [b"." + line if line.startswith(b".") else line for line in lines]
    return b"\r\n".join(stuffed) + b"\r\n"


def _xtext_safe(text: str) -> str:
    return "".join(
        c if 33 <= ord(c) <= 126 and c not in "+=" else f"+{ord(c):02X}" for c in text
    )


class SmtpAgent:
    """The smtp deliverer (batch: every recipient of a job at once)."""

    batch = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def begin_job(self, job: Job) -> None:
        return None

    def deliver(
        self, ctx: JobContext, recipients: Sequence[Recipient]
    ) -> list[Outcome]:
        host = ctx.job.host or recipients[0].host
        results: dict[int, Outcome] = {}
        target, port = route_for(host, self.settings)
        try:
            sock, _address = open_connection(target, port, self.settings.timeout)
        except SmtpFailure as exc:
            log.info("%s: %s", ctx.relpath, exc.outcome.diagnostic)
            outs = [exc.outcome] * len(recipients)
            last = exc.outcome
            outs[-1] = Outcome(
                "deferall", last.dsn_status, last.diagnostic, remote_mta=last.remote_mta
            )
            return outs
        session = SmtpSession(sock, connect_label(target), self.settings, target)
        try:
            session.greet()
            for group in _by_header(recipients):
                results.update(self._transaction(session, ctx, group))
            session.quit()
        except SmtpFailure as exc:
            for r in recipients:
                results.setdefault(r.offset, exc.outcome)
        finally:
            session.close()
        return [results[r.offset] for r in recipients]

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
        mail = f"MAIL FROM:<{_sender(ctx)}>"
        if "SIZE" in s.extensions:
            mail += f" SIZE={len(payload)}"
        if "8BITMIME" in s.extensions and any(b > 127 for b in payload):
            mail += " BODY=8BITMIME"
        dsn = "DSN" in s.extensions
        if dsn and cf.ret:
            mail += f" RET={cf.ret.upper()}"
        if dsn and cf.envid:
            mail += f" ENVID={cf.envid}"
        cmds = [mail] + [_rcpt_cmd(r, dsn) for r in rcpts]
        if "PIPELINING" in s.extensions:
            s.send(
                ("\r\n".join([*cmds, "DATA"]) + "\r\n").encode(
                    "utf-8", "surrogateescape"
                )
            )
            replies = [s.reply() for _ in cmds]
            data_reply: Reply | None = s.reply()
        else:
            replies = [s.command(mail)]
            if replies[0].code // 100 == 2:
                replies += [s.command(c) for c in cmds[1:]]
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
            if data_reply is not None and data_reply.code == 354:
                s.send(b".\r\n")
                s.reply()
            s.command("RSET")
            return {r.offset: replies[0].outcome(s.remote) for r in rcpts}
        out: dict[int, Outcome] = {}
        accepted: list[Recipient] = []
        for r, reply in zip(rcpts, replies[1:], strict=True):
            if reply.code // 100 == 2:
                accepted.append(r)
            else:
                out[r.offset] = reply.outcome(s.remote)
        if data_reply is None and accepted:
            data_reply = s.command("DATA")
        if not accepted:
            if data_reply is not None and data_reply.code == 354:
                s.send(b".\r\n")
                s.reply()
            s.command("RSET")
            return out
        assert data_reply is not None
        if data_reply.code != 354:
            return out | {r.offset: data_reply.outcome(s.remote) for r in accepted}
        s.send(payload + b".\r\n")
        final = s.reply()
        action = "" if dsn else "relayed"
        return out | {r.offset: final.outcome(s.remote, action) for r in accepted}


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


def parser() -> argparse.ArgumentParser:
    p = libta.common_parser("smtp", "SMTP transport agent.")
    p.add_argument("-h", "--helo", dest="helo", default=None, help="HELO/EHLO name")
    p.add_argument(
        "-F", "--relay", dest="relay", default=None, help="relay host ([ip] or name)"
    )
    p.add_argument("-p", "--port", dest="port", type=int, default=25)
    p.add_argument("-s", dest="s_flag", action="store_true", help="accepted (ZMailer)")
    p.add_argument("-x", dest="x_flag", action="store_true", help="accepted (ZMailer)")
    p.add_argument(
        "--route-map", default=None, help="file of 'domain relayhost[:port]'"
    )
    p.add_argument("--require-tls", action="store_true")
    p.add_argument(
        "--tls-ca", default=None, help="CA file for --require-tls verification"
    )
    p.add_argument("--timeout", type=float, default=300.0)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    libta.setup_logging("smtp")
    args = libta.parse_args(parser(), argv)
    options = libta.options_from(args, "smtp")
    try:
        routes = load_route_map(args.route_map) if args.route_map else {}
    except (OSError, ValueError) as exc:
        log.error("route map: %s", exc)
        return 78
    settings = Settings(
        heloname=args.helo or socket.getfqdn(),
        relay=args.relay,
        port=args.port,
        routes=routes,
        require_tls=args.require_tls,
        tls_ca=args.tls_ca,
        timeout=args.timeout,
    )
    return libta.run_agent(options, SmtpAgent(settings))


if __name__ == "__main__":
    sys.exit(main())

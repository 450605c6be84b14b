"""A blocking SMTP client session: connecting through the hops, EHLO, STARTTLS, commands
with the RFC 5321 4.5.3.2 time-outs, pipelined batches, DATA in timed blocks."""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

from scheduler.ta.dns.destinations import Hop
from scheduler.ta.libta import Outcome
from scheduler.ta.smtpwire import Reply

__all__ = ["SmtpFailure", "SmtpSession", "Timeouts", "TlsPolicy", "open_session"]

log = logging.getLogger(__name__)

_BLOCK = 64 * 1024


class SmtpFailure(Exception):
    """The session failed as a whole: every undecided recipient gets ``outcome``;
    ``connect``: no host could be reached (defer the rest of the thread too)."""

    def __init__(self, outcome: Outcome, connect: bool = False) -> None:
        super().__init__(outcome.diagnostic)
        self.outcome = outcome
        self.connect = connect


@dataclass(slots=True)
class Timeouts:
    """Seconds per phase (RFC 5321 4.5.3.2; ``connect`` is ours)."""

    connect: float = 60.0
    greeting: float = 300.0
    mail: float = 300.0
    rcpt: float = 300.0
    data: float = 120.0
    block: float = 180.0
    dot: float = 600.0


@dataclass(frozen=True, slots=True)
class TlsPolicy:
    """``may`` (opportunistic, unverified), ``encrypt`` (required), ``verify`` (required,
    certificate checked against the MX host name)."""

    level: str = "may"
    cafile: str | None = None

    @property
    def required(self) -> bool:
        return self.level in ("encrypt", "verify")

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.cafile)
        if self.level != "verify":
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


class _HostRefused(Exception):
    """A 5xx greeting: this host does not take mail, try the next MX."""


def _local(sock: socket.socket) -> str:
    try:
        host, port = sock.getsockname()[:2]
    except OSError:
        return "|"
    return f"{host}|{port}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def open_session(
    hops: Sequence[Hop], port: int, helo: str, timeouts: Timeouts, tls: TlsPolicy
) -> SmtpSession:
    """Connect to the first address that greets with 2xx and say EHLO (and STARTTLS).

    Refused or timed-out connections and 4xx greetings move on to the next address,
    then the next MX; a 5xx greeting moves on to the next MX. Raises
    :class:`SmtpFailure`: deferred (``connect``) when nothing answered, an error when
    every host that answered refused with 5xx.
    """
    last = ""
    refused: dict[str, Reply] = {}
    for hop in hops:
        for address in hop.addresses:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(
                socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
            )  # we batch writes
            sock.settimeout(timeouts.connect)
            try:
                sock.connect((address, port))
            except OSError as exc:
                last = f"connect to {hop.name} [{address}|{port}|{_local(sock)}]: {_reason(exc)}"
                sock.close()
                continue
            session = SmtpSession(sock, hop.name, timeouts)
            try:
                session.start(helo, tls)
            except _HostRefused as exc:
                refused[hop.name] = exc.args[0]
                last = f"{hop.name} [{address}] greeted: {exc.args[0].text}"
                session.close()
                break
            except SmtpFailure as exc:
                last = exc.outcome.diagnostic.removeprefix("smtp; ")
                last = last.removeprefix("500 (").removesuffix(")")
                session.close()
                continue
            return session
    if hops and len(refused) == len({h.name for h in hops}):
        reply = list(refused.values())[-1]
        raise SmtpFailure(Outcome("error", reply.dsn_status(), reply.diagnostic()))
    diag = f"smtp; 500 ({last or 'no address to connect to'})"
    raise SmtpFailure(Outcome("deferred", "4.4.1", diag), connect=True)


class SmtpSession:
    """One SMTP connection (blocking, with a time-out per command)."""

    def __init__(self, sock: socket.socket, remote: str, timeouts: Timeouts) -> None:
        self.sock = sock
        self.remote = remote
        self.timeouts = timeouts
        self.file = sock.makefile("rb")
        self.extensions: dict[str, str] = {}
        self.tls = False
        self.helo = ""
        self.broken = False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
            self.sock.close()

    def _lost(self, exc: BaseException) -> SmtpFailure:
        diag = f"smtp; 500 (connection to {self.remote} lost: {_reason(exc)})"
        return SmtpFailure(Outcome("deferred", "4.4.2", diag, remote_mta=self.remote))

    def send(self, data: bytes, timeout: float) -> None:
        self.sock.settimeout(timeout)
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise self._lost(exc) from exc

    def reply(self, timeout: float) -> Reply:
        self.sock.settimeout(timeout)
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

    def command(self, line: str, timeout: float) -> Reply:
        self.send(line.encode("utf-8", "surrogateescape") + b"\r\n", timeout)
        return self.reply(timeout)

    def pipeline(self, commands: Sequence[str]) -> list[Reply]:
        """Send every command at once (RFC 2920), then read one reply each."""
        data = "".join(c + "\r\n" for c in commands).encode("utf-8", "surrogateescape")
        self.send(data, self.timeouts.mail)
        out = []
        for cmd in commands:
            verb = cmd[:4].upper()
            timeout = {"MAIL": self.timeouts.mail, "DATA": self.timeouts.data}.get(
                verb, self.timeouts.rcpt
            )
            out.append(self.reply(timeout))
        return out

    def start(self, helo: str, tls: TlsPolicy) -> None:
        """Greeting, EHLO/HELO, STARTTLS as the policy says."""
        greeting = self.reply(self.timeouts.greeting)
        if greeting.code // 100 == 5:
            raise _HostRefused(greeting)
        if greeting.code // 100 != 2:
            raise SmtpFailure(greeting.outcome(self.remote))
        self.helo = helo
        self.ehlo()
        if "STARTTLS" in self.extensions:
            self.starttls(tls)
        elif tls.required:
            self._tls_failure(f"{self.remote} does not offer STARTTLS, TLS required")

    def _tls_failure(self, text: str) -> None:
        diag = f"smtp; 500 ({text})"
        raise SmtpFailure(Outcome("deferred", "4.7.0", diag, remote_mta=self.remote))

    def ehlo(self) -> None:
        reply = self.command(f"EHLO {self.helo}", self.timeouts.greeting)
        self.extensions = {}
        if reply.code // 100 == 2:
            for line in reply.lines[1:]:
                word, _, rest = line.partition(" ")
                self.extensions[word.upper()] = rest
            return
        reply = self.command(f"HELO {self.helo}", self.timeouts.greeting)
        if reply.code // 100 != 2:
            raise SmtpFailure(reply.outcome(self.remote))

    def starttls(self, tls: TlsPolicy) -> None:
        reply = self.command("STARTTLS", self.timeouts.greeting)
        if reply.code != 220:
            if tls.required:
                self._tls_failure(f"{self.remote} refused STARTTLS: {reply.text}")
            return
        try:
            self.file.close()
            self.sock = tls.context().wrap_socket(
                self.sock, server_hostname=self.remote
            )
        except (ssl.SSLError, OSError) as exc:
            self._tls_failure(f"TLS negotiation with {self.remote} failed: {exc}")
        self.file = self.sock.makefile("rb")
        self.tls = True
        self.ehlo()

    def reset(self) -> bool:
        """RSET before the next message on a reused session; False if it is gone."""
        if self.broken:
            return False
        try:
            return self.command("RSET", self.timeouts.mail).code // 100 == 2
        except SmtpFailure:
            return False

    def abandon(self, data_reply: Reply | None) -> None:
        """End a transaction that will not send its message (pipelined DATA got 354).

        The recipients' results are already known: a failure here only marks the
        session broken (the next message opens a new one)."""
        try:
            if data_reply is not None and data_reply.code == 354:
                self.send(b".\r\n", self.timeouts.dot)
                self.reply(self.timeouts.dot)
            self.command("RSET", self.timeouts.mail)
        except SmtpFailure:
            self.broken = True

    def send_data(self, payload: bytes) -> Reply:
        """The message in blocks (each within the block time-out), then ``.``."""
        data = payload + b".\r\n"  # one write for a small message (no Nagle stall)
        for at in range(0, len(data), _BLOCK):
            self.send(data[at : at + _BLOCK], self.timeouts.block)
        return self.reply(self.timeouts.dot)

    def quit(self) -> None:
        with contextlib.suppress(SmtpFailure):
            self.command("QUIT", self.timeouts.mail)

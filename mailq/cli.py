"""The ``mailq`` command: ZMailer's options and output, plus JSON, check and Prometheus modes.

The shell around :class:`mailq.client.MailqClient` and the renderers of
:mod:`mailq.output`: it reads options, the ZENV file and the local spool, runs one
session per host, and writes what the renderers return. See docs/client.md.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import click

from mailq import __version__
from mailq.client import MailqClient, resolve_port
from mailq.clienterrors import (
    EX_OK,
    EX_REFUSED,
    EX_UNAVAILABLE,
    EX_USAGE,
    AccessDenied,
    AuthError,
    ClientError,
    CommandRefused,
    ConnectError,
)
from mailq.output import (
    UNKNOWN,
    CheckResult,
    LocalMessage,
    ServerMetrics,
    SpoolStatus,
    Thresholds,
    check_unknown,
    evaluate_check,
    json_line,
    render_default,
    render_prometheus,
    render_status,
    row_object,
    short_objects,
    snmp_object,
    thread_object,
)
from mailq.parse import ThreadDetail, parse_counters
from mailq.timefmt import parse_duration
from scheduler.zenv import read_zenv
from spool.procs import pid_alive

__all__ = ["main", "split_credentials", "verbosity"]

USAGE = "Usage: {argv0} [-46isSvt] [-Z zenvcfgfile] [-cchannel -hhost] [-p#] [host]"
DEFAULT_ZCONFIG = "/etc/mail/zmailer.conf"  # the daemon's default: scheduler.zenv
DEFAULT_POSTOFFICE = "/var/spool/postoffice"
DEFAULT_HOST = "127.0.0.1"
_VALUE_SHORTS = set("cEhKpPuUZ")


# -- pure helpers ---------------------------------------------------------------------


def split_credentials(spec: str) -> tuple[str, str | None]:
    """``-U user/pass``: split at the first ``/``, else ``:``, else ``,`` (MQ2-REF 10.1).

    Returns ``(user, None)`` without a separator.
    """
    for sep in "/:,":
        if sep in spec:
            user, _, password = spec.partition(sep)
            return user, password
    return spec, None


def verbosity(args: Sequence[str]) -> int:
    """Verbosity as ZMailer's getopt loop computes it, left to right:
    ``-v`` adds one, ``-i`` and ``-u`` raise it to at least one, ``-t`` resets it."""
    level = 0
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg == "--":
            break
        if not arg.startswith("-") or arg.startswith("--") or arg == "-":
            continue
        for pos, ch in enumerate(arg[1:], 1):
            if ch == "v":
                level += 1
            elif ch in "iu":
                level = max(level, 1)
            elif ch == "t":
                level = 0
            if ch in _VALUE_SHORTS:
                skip = pos == len(arg) - 1
                break
    return level


# -- output sink ----------------------------------------------------------------------


@dataclass
class Sink:
    """Where text and JSON objects go; bytes are written as received (surrogateescape)."""

    argv0: str
    as_json: bool = False
    section_label: str = ""

    def out(self, text: str) -> None:
        click.echo(text.encode("utf-8", "surrogateescape"), nl=False)

    def err(self, text: str) -> None:
        click.echo(text.encode("utf-8", "surrogateescape"), nl=False, err=True)

    def obj(self, obj: dict[str, Any]) -> None:
        self.out(json_line(obj))

    def error(
        self, kind: str, message: str, code: int, *, stdout: bool = False
    ) -> None:
        """A failure: ZMailer's text (stdout or stderr), plus a JSON object in JSON mode."""
        if self.as_json:
            self.obj(
                {
                    "type": "error",
                    "server": self.section_label,
                    "error": kind,
                    "message": message,
                    "exit_code": code,
                }
            )
            self.err(message + "\n")
        elif stdout:
            self.out(message + "\n")
        else:
            self.err(message + "\n")


# -- configuration --------------------------------------------------------------------


@dataclass
class Options:
    argv0: str
    hosts: list[str]
    port: int | str
    family: int
    user: str
    password: str
    postoffice: str
    zenv: dict[str, str]
    verbose: int
    query: int
    status: int
    summary: bool
    channel: str | None
    thread_host: str | None
    debug: bool
    etrn: str | None
    kill: str | None
    as_json: bool
    check: bool
    prometheus: bool
    thresholds: Thresholds
    timeout: float
    clock: Callable[[], float] = field(default=time.time)


def _load_zenv(path: str | None) -> dict[str, str]:
    candidate = path or os.environ.get("ZCONFIG") or DEFAULT_ZCONFIG
    try:
        return read_zenv(candidate, environ={})  # the client reads the file only
    except OSError:
        if path:
            raise click.UsageError(f"cannot read ZENV file {path}") from None
        return {}


def _credentials(spec: str | None, password_file: str | None) -> tuple[str, str]:
    user, password = split_credentials(spec) if spec else (None, None)
    user = user or os.environ.get("MAILQ_USER") or "nobody"
    if password is None:
        pw_file = password_file or os.environ.get("MAILQ_PASSWORD_FILE")
        if pw_file:
            text = Path(pw_file).read_text(encoding="utf-8")
            password = text.splitlines()[0] if text else ""
        else:
            password = os.environ.get("MAILQ_PASSWORD", "nobody")
    return user, password


def _duration(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


# -- local spool ------------------------------------------------------------------------


def count_entries(directory: Path) -> int:
    """Names starting with a digit, following one-letter ``A``-``Z`` hash directories."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    total = 0
    for entry in entries:
        name = entry.name
        if name[:1].isdigit():
            total += 1
        elif len(name) == 1 and "A" <= name <= "Z" and entry.is_dir():
            total += count_entries(Path(entry.path))
    return total


def _pid_alive(pidfile: Path) -> bool | None:
    """None: no pid file; else whether the process in it exists."""
    try:
        pid = int(pidfile.read_text().split()[0])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, IndexError):
        return False
    return pid_alive(pid)


def spool_status(po: str) -> SpoolStatus:
    root = Path(po)
    routed = count_entries(root / "router")
    transport = count_entries(root / "transport")
    router_alive = _pid_alive(root / ".pid.router")
    sched_alive = _pid_alive(root / ".pid.scheduler")
    if router_alive is None:
        router_state = "never started"
    elif router_alive:
        router_state = "processing" if routed else "idle"
    else:
        router_state = (
            "core dumped" if (root / "router" / "core").exists() else "no daemon"
        )
    if sched_alive is None:
        sched_state = "never started"
    elif sched_alive:
        sched_state = "working" if transport else "idle"
    else:
        sched_state = "no scheduler daemon"
    if (root / "transport" / "core").exists():
        sched_state += " (core exists)"
    return SpoolStatus(
        postoffice=po,
        router_count=routed,
        router_state=router_state,
        deferred_count=count_entries(root / "deferred"),
        transport_count=transport,
        transport_state=sched_state,
        queue_count=count_entries(root / "queue"),
    )


def local_lookup(po: str) -> Callable[[str], LocalMessage | None]:
    """Read ``transport/<path>`` and stat ``queue/<path>``; None if either fails."""

    def lookup(path: str) -> LocalMessage | None:
        if path.startswith("/") or ".." in path.split("/"):
            return None
        try:
            control = (Path(po) / "transport" / path).read_bytes()
            st = (Path(po) / "queue" / path).stat()
        except OSError:
            return None
        return LocalMessage(control, st.st_size, int(st.st_mtime))

    return lookup


# -- one host -----------------------------------------------------------------------------


class HostRun:
    """One session against one server, in the mode the options select."""

    def __init__(self, opts: Options, host: str, sink: Sink) -> None:
        self.opts = opts
        self.host = host
        self.sink = sink
        self.label = host if not isinstance(opts.port, str) else opts.port
        observer = self._echo if opts.debug else None
        self.client = MailqClient(
            timeout=opts.timeout, line_observer=observer, on_connect_failed=self._failed
        )
        self.metrics = ServerMetrics(self.label, None, None)

    def _echo(self, line: str) -> None:
        self.sink.err(f"- {line}\n")

    def _failed(self, name: str, reason: str) -> None:
        if not self.sink.as_json and not self.opts.check and not self.opts.prometheus:
            self.sink.err(f"{self.opts.argv0}: connect failed to {name}\n")

    async def run(self) -> int:
        try:
            await self.client.connect(
                self.host, self.opts.port, family=self.opts.family
            )
            await self.client.auth(self.opts.user, self.opts.password)
            code = await self._mode()
        except CommandRefused as exc:
            await self.client.quit()
            return self._report(exc)
        except ClientError as exc:
            await self.client.close()
            return self._report(exc)
        await self.client.quit()
        return code

    async def _mode(self) -> int:
        o = self.opts
        if o.check:
            return await self._check()
        if o.prometheus:
            return await self._prometheus()
        if o.etrn is not None or o.kill is not None:
            return await self._actions()
        if o.query:
            return await self._query()
        return await self._default()

    # modes
    async def _actions(self) -> int:
        code = EX_OK
        pairs = [("ETRN", self.opts.etrn), ("KILL MSG", self.opts.kill)]
        for verb, arg in pairs:
            if arg is None:
                continue
            reply = await self.client.command(f"{verb} {arg}")
            if self.sink.as_json:
                self.sink.obj(
                    {
                        "type": "reply",
                        "server": self.label,
                        "ok": reply.ok,
                        "text": reply.line,
                    }
                )
            else:
                self.sink.out(reply.line + "\n")
            code = max(code, EX_OK if reply.ok else EX_REFUSED)
        return code

    async def _query(self) -> int:
        mq, sink, level = self.client, self.sink, self.opts.query
        if not sink.as_json:
            command = {
                1: "SHOW QUEUE THREADS",
                2: "SHOW QUEUE SHORT",
                3: "SHOW SNMP",
                4: "SHOW COUNTERS",
            }[level]
            for line in await mq.show_body(command):
                sink.out(line + "\n")
            return EX_OK
        if level == 1:
            for t in await mq.show_queue_threads2():
                sink.obj(thread_object(self.label, t))
        elif level == 2:
            for obj in short_objects(self.label, await mq.show_queue_short()):
                sink.obj(obj)
        elif level == 3:
            sink.obj(snmp_object(self.label, await mq.show_snmp()))
        else:
            counters = await mq.show_counters()
            sink.obj({"type": "counters", "server": self.label, "counters": counters})
        return EX_OK

    async def _default(self) -> int:
        o, mq = self.opts, self.client
        pairs: list[tuple[str, str]]
        if o.thread_host is not None:
            pairs = [(o.channel or "smtp", o.thread_host)]
        else:
            pairs = [(t.channel, t.host) for t in await mq.show_queue_threads2()]
        details: list[ThreadDetail] = []
        refused: CommandRefused | None = None
        for channel, host in pairs:
            try:
                details.append(await mq.show_thread(channel, host))
            except CommandRefused as exc:
                refused = exc
                break
        await mq.quit()
        self._print_default(details)
        if refused is not None:
            self._report(refused)
            return EX_REFUSED
        return EX_OK

    def _print_default(self, details: list[ThreadDetail]) -> None:
        o = self.opts
        now = int(o.clock())
        local = self.client_is_local()
        lookup = local_lookup(o.postoffice) if (o.verbose and local) else None
        if self.sink.as_json:
            for d in details:
                for row in d.rows:
                    loc = lookup(row.path) if lookup is not None else None
                    obj = row_object(
                        self.label, d.channel, d.host, row,
                        local=loc, verbose=bool(o.verbose), now=now,
                    )  # fmt: skip
                    self.sink.obj(obj)
            return
        rendered = render_default(details, now, verbose=bool(o.verbose), lookup=lookup)
        for line in rendered.err:
            self.sink.err(line + "\n")
        self.sink.out("".join(rendered.out))

    def client_is_local(self) -> bool:
        """C10: local control files mean something only for a server on this machine."""
        return self.client.is_local

    async def _check(self) -> int:
        snmp = await self.client.show_snmp()
        oldest: int | None
        try:
            threads = await self.client.show_queue_threads2()
            ages = [t.qa for t in threads if t.qa is not None]
            oldest = max(ages, default=0)
        except CommandRefused:
            oldest = None
        result = evaluate_check(snmp, oldest, self.opts.thresholds)
        self._check_line(result)
        return result.code

    def _check_line(self, result: CheckResult) -> None:
        prefix = f"[{self.label}] " if len(self.opts.hosts) > 1 else ""
        line = result.line
        if prefix:
            head, sep, tail = line.partition(" - ")
            line = f"{head}{sep}{prefix}{tail}"
        self.sink.out(line + "\n")

    async def _prometheus(self) -> int:
        snmp = await self.client.show_snmp()
        counters = await self.client.show_counters()
        self.metrics = ServerMetrics(self.label, snmp, counters)
        return EX_OK

    # failures
    def _report(self, exc: ClientError) -> int:
        o, sink = self.opts, self.sink
        if o.check:
            self._check_line(check_unknown(f"{self.label}: {_describe(exc)}"))
            return UNKNOWN
        if o.prometheus:
            self.sink.err(f"{o.argv0}: {_describe(exc)}\n")
            return exc.exit_code
        if isinstance(exc, ConnectError):
            self._report_connect(exc)
        elif isinstance(exc, AccessDenied):
            sink.error("access", f"{o.argv0}: {exc}", exc.exit_code)
        elif isinstance(exc, AuthError):
            sink.error("auth", str(exc), exc.exit_code, stdout=True)
        elif isinstance(exc, CommandRefused):
            sink.error("refused", str(exc), exc.exit_code, stdout=True)
        else:
            sink.error("protocol", f"{o.argv0}: {self.label}: {exc}", exc.exit_code)
        return exc.exit_code

    def _report_connect(self, exc: ConnectError) -> None:
        o = self.opts
        message = f"{o.argv0}: {exc}" if exc.unknown_host else ""
        if isinstance(o.port, str):
            message = f"{o.argv0}: connect failed to {exc.host}"
        if message:
            self.sink.error("connect", message, exc.exit_code)
        elif self.sink.as_json:
            self.sink.error("connect", f"{o.argv0}: {exc}", exc.exit_code)
        if not o.hosts:
            pidfile = Path(o.postoffice) / ".pid.scheduler"
            if not pidfile.exists():
                self.sink.err(
                    f'{o.argv0}: {o.postoffice} is not active ("{pidfile}" does not exist)\n'
                )


def _describe(exc: ClientError) -> str:
    return str(exc)


# -- the command -----------------------------------------------------------------------


class MailqCommand(click.Command):
    """ZMailer's usage error (text and exit 64) instead of click's."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["mailq.raw_args"] = list(args)
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            _usage_error(ctx, exc)


def _argv0(ctx: click.Context) -> str:
    return ctx.find_root().info_name or "mailq"


def _usage_error(ctx: click.Context, exc: click.UsageError) -> NoReturn:
    argv0 = _argv0(ctx)
    name = getattr(exc, "option_name", None)
    if isinstance(exc, click.NoSuchOption) and name:
        if name.startswith("--"):
            click.echo(f"{argv0}: unrecognized option '{name}'", err=True)
        else:
            click.echo(f"{argv0}: invalid option -- '{name.lstrip('-')}'", err=True)
    elif isinstance(exc, click.BadOptionUsage) and name and "requires" in exc.message:
        click.echo(
            f"{argv0}: option requires an argument -- '{name.lstrip('-')}'", err=True
        )
    else:
        click.echo(f"{argv0}: {exc.format_message()}", err=True)
    click.echo(USAGE.format(argv0=argv0), err=True)
    raise click.exceptions.Exit(EX_USAGE)


VERSION_TEXT = (
    "mailq (zmailer-mailq {version}): MAILQ v2 client, compatible with ZMailer 3.0.1\n"
)


@click.command(
    cls=MailqCommand,
    context_settings={"help_option_names": ["--help"], "max_content_width": 100},
)
@click.option("-4", "ipv4", is_flag=True, help="Try IPv4 addresses first.")
@click.option("-6", "ipv6", is_flag=True, help="Try IPv6 addresses first (default).")
@click.option(
    "-c", "channel", metavar="CHANNEL", help="Channel of the single thread to show."
)
@click.option(
    "-h",
    "thread_host",
    metavar="HOST",
    help="Destination host of the thread (channel smtp unless -c).",
)
@click.option(
    "-d", "debug", is_flag=True, help="Echo every line read to stderr as '- <line>'."
)
@click.option(
    "-E", "etrn", metavar="DOMAIN", help="Send ETRN DOMAIN and print the reply."
)
@click.option("-i", "own", is_flag=True, help="Verbose (v1: only your own messages).")
@click.option("-K", "kill", metavar="ID", help="Send KILL MSG ID and print the reply.")
@click.option(
    "-M", "local_counters", is_flag=True, help="Print the local counter block and exit."
)
@click.option(
    "-p",
    "port",
    metavar="PORT",
    help="TCP port, service name, or /path of a Unix socket.",
)
@click.option(
    "-P", "postoffice", metavar="DIR", help="Postoffice directory for -v, -s, -M."
)
@click.option(
    "-Q",
    "query",
    count=True,
    help="THREADS, SHORT (-QQ), SNMP (-QQQ), COUNTERS (-QQQQ).",
)
@click.option(
    "-s", "status", count=True, help="Print spool status lines; -ss: only those."
)
@click.option(
    "-S", "summary", is_flag=True, help="Accepted (v1 summary; no effect in v2)."
)
@click.option("-t", "terse", is_flag=True, help="Reset verbosity.")
@click.option(
    "-u", "owner", metavar="USER", help="Accepted (v1 owner filter); forces verbose."
)
@click.option(
    "-U", "credentials", metavar="USER/PASS", help="Login (split at '/', ':' or ',')."
)
@click.option(
    "-v", "verbose", count=True, help="Verbose: read the local control files."
)
@click.option(
    "-V", "version", is_flag=True, help="Print the version on stderr and exit."
)
@click.option("-Z", "zenv_file", metavar="FILE", help="ZENV file (default $ZCONFIG).")
@click.option(
    "--password-file", metavar="FILE", help="Read the password from FILE's first line."
)
@click.option(
    "--json", "as_json", is_flag=True, help="JSON Lines output (docs/monitoring.md)."
)
@click.option("--check", is_flag=True, help="Monitoring-plugin check (exit 0/1/2/3).")
@click.option("--warn-messages", type=int, metavar="N")
@click.option("--crit-messages", type=int, metavar="N")
@click.option("--warn-recipients", type=int, metavar="N")
@click.option("--crit-recipients", type=int, metavar="N")
@click.option("--warn-age", metavar="DURATION", help="e.g. 30m, 1d2h")
@click.option("--crit-age", metavar="DURATION")
@click.option(
    "--prometheus", is_flag=True, help="SNMP and COUNTERS in Prometheus text format."
)
@click.option(
    "--timeout", type=float, default=60.0, show_default=True, help="Seconds per reply."
)
@click.argument("hosts", nargs=-1)
@click.pass_context
def main(ctx: click.Context, /, **kw: Any) -> None:
    """Show the ZMailer scheduler's queue over MAILQ v2 (docs/client.md)."""
    argv0 = _argv0(ctx)
    if kw["version"]:
        click.echo(VERSION_TEXT.format(version=__version__), nl=False, err=True)
        ctx.exit(EX_OK)
    try:
        opts = _options(ctx, argv0, kw)
    except click.UsageError as exc:
        _usage_error(ctx, exc)
    ctx.exit(run(opts, local_counters=kw["local_counters"]))


def _options(ctx: click.Context, argv0: str, kw: dict[str, Any]) -> Options:
    zenv = _load_zenv(kw["zenv_file"])
    postoffice = (
        kw["postoffice"] or os.environ.get("POSTOFFICE") or zenv.get("POSTOFFICE")
    ) or DEFAULT_POSTOFFICE
    try:
        port = resolve_port(kw["port"])
    except ValueError as exc:
        _usage_error(ctx, click.UsageError(str(exc)))
    try:
        user, password = _credentials(kw["credentials"], kw["password_file"])
    except OSError as exc:
        _usage_error(
            ctx, click.UsageError(f"cannot read password file: {exc.strerror}")
        )
    obj = ctx.obj if isinstance(ctx.obj, dict) else {}
    return Options(
        argv0=argv0,
        hosts=list(kw["hosts"]),
        port=port,
        family=socket.AF_INET if kw["ipv4"] and not kw["ipv6"] else socket.AF_INET6,
        user=user,
        password=password,
        postoffice=postoffice,
        zenv=zenv,
        verbose=verbosity(ctx.meta.get("mailq.raw_args", [])),
        query=kw["query"],
        status=kw["status"],
        summary=kw["summary"],
        channel=kw["channel"],
        thread_host=kw["thread_host"],
        debug=kw["debug"],
        etrn=kw["etrn"],
        kill=kw["kill"],
        as_json=kw["as_json"],
        check=kw["check"],
        prometheus=kw["prometheus"],
        thresholds=Thresholds(
            warn_messages=kw["warn_messages"],
            crit_messages=kw["crit_messages"],
            warn_recipients=kw["warn_recipients"],
            crit_recipients=kw["crit_recipients"],
            warn_age=_duration(kw["warn_age"]),
            crit_age=_duration(kw["crit_age"]),
        ),
        timeout=kw["timeout"],
        clock=obj.get("clock", time.time),
    )


def run(opts: Options, *, local_counters: bool = False) -> int:
    """Everything after option parsing; returns the exit status."""
    sink = Sink(opts.argv0, as_json=opts.as_json)
    if local_counters:
        return _local_counters(opts, sink)
    if opts.query >= 5:
        sink.out("Bad -Q... command\n")
        return EX_USAGE
    if opts.status and not (opts.check or opts.prometheus):
        _print_status(opts, sink)
        if opts.status >= 2 and not opts.summary:
            return EX_OK
    hosts = opts.hosts or [_default_host(opts)]
    return asyncio.run(_run_hosts(opts, hosts, sink))


def _default_host(opts: Options) -> str:
    return os.environ.get("MAILSERVER") or opts.zenv.get("MAILSERVER") or DEFAULT_HOST


async def _run_hosts(opts: Options, hosts: list[str], sink: Sink) -> int:
    worst = EX_OK
    metrics: list[ServerMetrics] = []
    text_sections = len(hosts) > 1 and not (
        opts.as_json or opts.check or opts.prometheus
    )
    for i, host in enumerate(hosts):
        if text_sections:
            sink.out(("\n" if i else "") + f"==> {host} <==\n")
        hr = HostRun(opts, host, sink)
        sink.section_label = hr.label
        code = await hr.run()
        worst = max(worst, code)
        if opts.prometheus:
            metrics.append(hr.metrics)
    if opts.prometheus:
        sink.out("".join(render_prometheus(metrics)))
    return worst


def _print_status(opts: Options, sink: Sink) -> None:
    st = spool_status(opts.postoffice)
    if opts.as_json:
        sink.obj({"type": "status", "server": "", **asdict(st)})
        return
    sink.out("".join(render_status(st)))


def _local_counters(opts: Options, sink: Sink) -> int:
    """``-M``: the scheduler's persistent counter block, read locally (never created):
    ZENV ``SNMPSHAREDFILE``, else ``$POSTOFFICE/.mailq-scheduler.counters`` (the
    daemon's default; ZMailer's own ``.zmailer.SNMP.block`` has another format)."""
    shared = opts.zenv.get("SNMPSHAREDFILE")
    path = (
        Path(shared) if shared else Path(opts.postoffice) / ".mailq-scheduler.counters"
    )
    if not path.is_file():
        message = (
            f"{opts.argv0}: no counter file {path} (is the scheduler running here?)"
        )
        sink.error("counters", message, EX_UNAVAILABLE)
        return EX_UNAVAILABLE
    try:
        from scheduler.counters import Counters

        with Counters.open(str(path), readonly=True) as block:
            lines = block.dump(int(opts.clock()))
    except (ImportError, OSError, ValueError) as exc:
        message = f"{opts.argv0}: cannot read counter file {path}: {exc}"
        sink.error("counters", message, EX_UNAVAILABLE)
        return EX_UNAVAILABLE
    if opts.as_json:
        counters = parse_counters(lines)
        sink.obj({"type": "counters", "server": "local", "counters": counters})
    else:
        sink.out("".join(line + "\n" for line in lines))
    return EX_OK

"""The ``mailq`` run modes: one MAILQ v2 session per host, in the mode the options select.

Default and verbose (``-v``) thread listings, ``-Q`` to ``-QQQQ``, ``-E``/``-K``,
``--check``, ``--prometheus``, several hosts in a row; ``-s`` and ``-M`` are read
locally (:mod:`mailq.client.localspool`).  See docs/client.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from mailq.client.errors import (
    EX_OK,
    EX_REFUSED,
    EX_USAGE,
    AccessDenied,
    AuthError,
    ClientError,
    CommandRefused,
    ConnectError,
)
from mailq.client.library import MailqClient
from mailq.client.localspool import local_lookup, print_local_counters, print_status
from mailq.client.nagios import combine
from mailq.client.options import DEFAULT_HOST, Options
from mailq.client.output import (
    UNKNOWN,
    CheckResult,
    ServerMetrics,
    check_unknown,
    evaluate_check,
    render_default,
    render_prometheus,
    row_object,
    short_objects,
    snmp_object,
    thread_object,
)
from mailq.client.parse import ThreadDetail
from mailq.client.sink import Sink
from mailq.client.top import run_top
from mailq.client.watching import run_watch

__all__ = ["HostRun", "run"]


def run(opts: Options, *, local_counters: bool = False) -> int:
    """Everything after option parsing; returns the exit status."""
    sink = Sink(opts.argv0, as_json=opts.as_json)
    if local_counters:
        now = int(opts.clock())
        return print_local_counters(opts.postoffice, opts.zenv, now, sink)
    if opts.top or opts.watch:
        host = opts.hosts[0] if opts.hosts else _default_host(opts)
        if opts.top:
            return run_top(host, opts.port, opts.user, opts.password, opts.timeout)
        return run_watch(host, opts.port, opts.user, opts.password, opts.where)
    if opts.query >= 5:
        sink.out("Bad -Q... command\n")
        return EX_USAGE
    if opts.status and not (opts.check or opts.prometheus):
        print_status(opts.postoffice, sink)
        if opts.status >= 2 and not opts.summary:
            return EX_OK
    hosts = opts.hosts or [_default_host(opts)]
    return asyncio.run(_run_hosts(opts, hosts, sink))


def _default_host(opts: Options) -> str:
    return os.environ.get("MAILSERVER") or opts.zenv.get("MAILSERVER") or DEFAULT_HOST


async def _run_hosts(opts: Options, hosts: list[str], sink: Sink) -> int:
    worst = EX_OK
    metrics: list[ServerMetrics] = []
    checks: list[tuple[str, CheckResult]] = []
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
        if opts.check and hr.check is not None:
            checks.append((hr.label, hr.check))
    if opts.prometheus:
        sink.out("".join(render_prometheus(metrics)))
    if opts.check:
        worst, lines = combine(checks)
        sink.out("".join(line + "\n" for line in lines))
    return worst


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
        self.check: CheckResult | None = None

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
        self.check = evaluate_check(snmp, oldest, self.opts.thresholds)
        return self.check.code

    async def _prometheus(self) -> int:
        snmp = await self.client.show_snmp()
        counters = await self.client.show_counters()
        try:  # our daemon's own metrics; ZMailer answers '-'
            native: list[str] | None = await self.client.show_body("SHOW METRICS")
        except CommandRefused:
            native = None
        threads = None
        if native is None:  # ZMailer: the oldest mail per destination from THREADS2
            with contextlib.suppress(CommandRefused):
                threads = await self.client.show_queue_threads2()
        self.metrics = ServerMetrics(self.label, snmp, counters, native, threads)
        return EX_OK

    # failures
    def _report(self, exc: ClientError) -> int:
        o, sink = self.opts, self.sink
        if o.check:
            self.check = check_unknown(self._where(exc))
            if isinstance(exc, AuthError | CommandRefused):
                sink.err(f"{o.argv0}: {self._where(exc)}\n")
            return UNKNOWN
        if o.prometheus:
            self.sink.err(f"{o.argv0}: {self._where(exc)}\n")
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

    def _where(self, exc: ClientError) -> str:
        """What failed and where: host, port and the reason."""
        port = self.opts.port
        place = port if isinstance(port, str) else f"{self.host} port {port}"
        if isinstance(exc, ConnectError):
            what = "unknown host" if exc.unknown_host else "connect failed"
            return f"{place}: {what}: {exc.reason}"
        return f"{place}: {exc}"

"""``mailqctl``: the operator commands of MAILQ v2 from the command line (docs/client.md).

Subcommands are named after the verbs (``hold``, ``release``, ``retry``, ``bounce``,
``delete``, ``undo``, ``suspend``, ``resume``, ``policy-set``, ``policy-delete``,
``msgs``, ``msg``, ``ops``, ``suspends``, ``policies``, ``shape``, ``explain``). The
connection and credential options are those of ``mailq`` (``-p``, ``-U``,
``--password-file``, ``-4``/``-6``, ``--timeout``; ``MAILQ_USER``/``MAILQ_PASSWORD``), with
``-H HOST`` repeatable for several servers. A bulk target (``--thread``/``--where``)
prints the server's preview and asks before it acts; ``--yes`` acts without asking.
``--json`` prints one JSON object per line.

Exit status: 0 all done, 1 a server refused or the operator declined, 2 usage,
69 no server could be reached.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import click

from mailq.client.ctlformat import confirm_token, op_id, records, table
from mailq.client.errors import (
    EX_OK,
    EX_REFUSED,
    EX_UNAVAILABLE,
    ClientError,
    CommandRefused,
    ConnectError,
)
from mailq.client.library import MailqClient, resolve_port
from mailq.client.options import DEFAULT_HOST, _credentials

__all__ = ["main"]

BODY_VERBS = ("SHOW MSGS", "SHOW MSG ", "SHOW OPS", "SHOW SUSPENDS", "SHOW POLICIES")


@dataclass
class Ctx:
    hosts: list[str]
    port: int | str
    family: int
    user: str
    password: str
    timeout: float
    as_json: bool
    yes: bool
    status: int = EX_OK


def _is_body(command: str) -> bool:
    return command.startswith(BODY_VERBS) or command.startswith(
        ("SHOW QUEUE SHAPE", "EXPLAIN ")
    )


async def _session(ctx: Ctx, host: str, commands: Sequence[str]) -> list[Any]:
    async with MailqClient(timeout=ctx.timeout) as client:
        await client.connect(host, ctx.port, family=ctx.family)
        await client.auth(ctx.user, ctx.password)
        out: list[Any] = []
        for command in commands:
            if _is_body(command):
                try:
                    out.append(await client.show_body(command))
                except CommandRefused as exc:
                    out.append(exc.reply)
            else:
                out.append((await client.command(command)).line)
        return out


def _run(ctx: Ctx, host: str, *commands: str) -> list[Any] | None:
    try:
        return asyncio.run(_session(ctx, host, commands))
    except ConnectError as exc:
        click.echo(f"mailqctl: {host}: cannot connect: {exc.reason}", err=True)
        ctx.status = EX_UNAVAILABLE
    except ClientError as exc:
        click.echo(f"mailqctl: {host}: {exc}", err=True)
        ctx.status = EX_REFUSED
    except (OSError, TimeoutError) as exc:
        click.echo(f"mailqctl: {host}: {exc}", err=True)
        ctx.status = EX_UNAVAILABLE
    return None


def _emit(ctx: Ctx, host: str, rec: dict[str, Any]) -> None:
    if len(ctx.hosts) > 1:
        rec = {"server": host, **rec}
    click.echo(json.dumps(rec, ensure_ascii=False))


def _status_line(ctx: Ctx, host: str, line: str) -> None:
    ok = line.startswith("+")
    if not ok:
        ctx.status = max(ctx.status, EX_REFUSED)
    if ctx.as_json:
        _emit(ctx, host, {"ok": ok, "reply": line.rstrip("\n"), "op": op_id(line)})
        return
    prefix = f"{host}: " if len(ctx.hosts) > 1 else ""
    click.echo(prefix + line.rstrip("\n"), err=not ok)


def _show(ctx: Ctx, command: str, kind: str, headers: Sequence[str]) -> None:
    for host in ctx.hosts:
        got = _run(ctx, host, command)
        if got is None:
            continue
        (reply,) = got
        if isinstance(reply, str):
            _status_line(ctx, host, reply)
            continue
        recs = records(kind, reply)
        if ctx.as_json:
            for rec in recs:
                _emit(ctx, host, rec)
            continue
        if len(ctx.hosts) > 1:
            click.echo(f"{host}:")
        if kind in ("msg", "explain"):
            for line in reply:
                click.echo(line.replace("\t", "  ", 1) if kind == "explain" else line)
            continue
        if kind == "shape":
            cells = [r.split("\t") for r in reply]
            if cells:
                cells[0][0] = "DESTINATION"
                for line in table(cells[0], cells[1:]):
                    click.echo(line)
            continue
        rows = [
            [rec.get(h.lower().replace("-", "_"), "") for h in headers] for rec in recs
        ]
        for line in table(headers, rows):
            click.echo(line)


def _act(ctx: Ctx, command: str) -> None:
    """Send an acting command; a preview is shown and confirmed before it acts."""
    for host in ctx.hosts:
        got = _run(ctx, host, command)
        if got is None:
            continue
        (line,) = got
        token = (
            confirm_token(line)
            if line.startswith(("+OK preview", "-Not done"))
            else None
        )
        if token is None:
            _status_line(ctx, host, line)
            continue
        if ctx.as_json:
            _emit(ctx, host, {"preview": line.rstrip("\n"), "token": token})
        else:
            click.echo((f"{host}: " if len(ctx.hosts) > 1 else "") + line.rstrip("\n"))
        if not ctx.yes:
            if not sys.stdin.isatty():
                click.echo("mailqctl: not confirmed (use --yes in scripts)", err=True)
                ctx.status = max(ctx.status, EX_REFUSED)
                continue
            if not click.confirm("Act on these messages?", default=False):
                ctx.status = max(ctx.status, EX_REFUSED)
                continue
        again = _run(ctx, host, f"{command} CONFIRM {token}")
        if again is not None:
            _status_line(ctx, host, again[0])


def _target(
    ident: str | None, thread: tuple[str, str] | None, where: str | None
) -> str:
    given = [x for x in (ident, thread, where) if x]
    if len(given) != 1:
        raise click.UsageError(
            "give exactly one of ID, --thread CHANNEL HOST, --where FILTER"
        )
    if thread:
        return f"THREAD {thread[0]} {thread[1]}"
    if where:
        return f"WHERE {where}"
    assert ident is not None
    return ident


_target_options = [
    click.argument("ident", required=False, metavar="[ID]"),
    click.option(
        "--thread", nargs=2, metavar="CHANNEL HOST", help="Every message of a thread."
    ),
    click.option(
        "--where", metavar="FILTER", help="Messages matching a filter (quote it)."
    ),
]


def _with_target(f: Any) -> Any:
    for deco in reversed(_target_options):
        f = deco(f)
    return f


@click.group(
    context_settings={"help_option_names": ["--help"], "max_content_width": 100}
)
@click.option(
    "-H",
    "--host",
    "hosts",
    multiple=True,
    metavar="HOST",
    help="Server (repeat for several).",
)
@click.option(
    "-p",
    "port",
    metavar="PORT",
    help="TCP port, service name, or /path of a Unix socket.",
)
@click.option(
    "-U", "credentials", metavar="USER/PASS", help="Login (split at '/', ':' or ',')."
)
@click.option(
    "--password-file", metavar="FILE", help="Read the password from FILE's first line."
)
@click.option("-4", "ipv4", is_flag=True, help="Try IPv4 addresses first.")
@click.option("-6", "ipv6", is_flag=True, help="Try IPv6 addresses first (default).")
@click.option(
    "--timeout", type=float, default=60.0, show_default=True, help="Seconds per reply."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--yes", "-y", is_flag=True, help="Act on a preview without asking.")
@click.pass_context
def main(ctx: click.Context, /, **kw: Any) -> None:
    """Operator control of the ZMailer-compatible scheduler over MAILQ v2."""
    try:
        port = resolve_port(kw["port"])
        user, password = _credentials(kw["credentials"], kw["password_file"])
    except (ValueError, OSError) as exc:
        raise click.UsageError(str(exc)) from None
    ctx.obj = Ctx(
        hosts=list(kw["hosts"]) or [os.environ.get("MAILSERVER") or DEFAULT_HOST],
        port=port,
        family=socket.AF_INET if kw["ipv4"] and not kw["ipv6"] else socket.AF_INET6,
        user=user,
        password=password,
        timeout=kw["timeout"],
        as_json=kw["as_json"],
        yes=kw["yes"],
    )


@main.result_callback()
@click.pass_context
def _finish(ctx: click.Context, result: object, /, **kw: Any) -> None:
    """The exit status: the worst of every server's answer."""
    obj = ctx.find_object(Ctx)
    ctx.exit(obj.status if obj is not None else EX_OK)


def _ctx() -> Ctx:
    obj = click.get_current_context().find_object(Ctx)
    assert obj is not None
    return obj


@main.command()
@click.argument("terms", nargs=-1)
def msgs(terms: tuple[str, ...]) -> None:
    """Messages, all or those a filter matches (SHOW MSGS [WHERE ...])."""
    flt = " ".join(_quote(t) for t in terms)
    _show(
        _ctx(),
        "SHOW MSGS" + (f" WHERE {flt}" if flt else ""),
        "msgs",
        (
            "SPOOL_ID",
            "PATH",
            "STATE",
            "AGE",
            "SIZE",
            "SENDER",
            "RECIPIENTS",
            "DESTINATIONS",
        ),
    )


def _quote(term: str) -> str:
    if " " not in term:
        return term
    for op in ("<=", ">=", "!=", "!~", "=", "<", ">", "~"):
        key, sep, value = term.partition(op)
        if sep and key.isalpha():
            return f'{key}{op}"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return term


@main.command()
@click.argument("ident")
def msg(ident: str) -> None:
    """One message in full (SHOW MSG)."""
    _show(_ctx(), f"SHOW MSG {ident}", "msg", ())


@main.command()
def ops() -> None:
    """Recent operations (SHOW OPS)."""
    _show(
        _ctx(),
        "SHOW OPS",
        "ops",
        ("OP", "TIME", "USER", "PEER", "COMMAND", "MESSAGES", "RECIPIENTS", "UNDONE"),
    )


@main.command()
def suspends() -> None:
    """Suspensions (SHOW SUSPENDS)."""
    _show(
        _ctx(),
        "SHOW SUSPENDS",
        "rules",
        ("RULE", "SELECTOR", "UNTIL", "REASON", "USER"),
    )


@main.command()
def policies() -> None:
    """Runtime policies (SHOW POLICIES)."""
    _show(
        _ctx(),
        "SHOW POLICIES",
        "rules",
        ("RULE", "SELECTOR", "UNTIL", "LIMITS", "USER"),
    )


@main.command()
@click.option(
    "--by",
    type=click.Choice(["host", "domain", "sender-domain", "channel"]),
    default="host",
)
@click.option("--top", type=int, default=20, show_default=True)
def shape(by: str, top: int) -> None:
    """Recipients by destination and age (SHOW QUEUE SHAPE)."""
    _show(_ctx(), f"SHOW QUEUE SHAPE BY {by} TOP {top}", "shape", ())


@main.command()
@click.argument("what", type=click.Choice(["thread", "msg"]))
@click.argument("args", nargs=-1, required=True)
def explain(what: str, args: tuple[str, ...]) -> None:
    """Why a thread or message waits (EXPLAIN THREAD ch host | EXPLAIN MSG id)."""
    _show(_ctx(), f"EXPLAIN {what.upper()} {' '.join(args)}", "explain", ())


@main.command()
@_with_target
@click.option("--reason", default="", help="Why (shown in SHOW MSG and the audit log).")
def hold(
    ident: str | None, thread: tuple[str, str] | None, where: str | None, reason: str
) -> None:
    """Keep messages in the queue, undelivered, until released (HOLD)."""
    _act(
        _ctx(),
        f"HOLD {_target(ident, thread, where)}" + (f" {reason}" if reason else ""),
    )


@main.command()
@_with_target
def release(
    ident: str | None, thread: tuple[str, str] | None, where: str | None
) -> None:
    """Release held messages (RELEASE)."""
    _act(_ctx(), f"RELEASE {_target(ident, thread, where)}")


@main.command()
@_with_target
@click.option("--at", "at", metavar="TIME", help="now, +15m, epoch or ISO 8601 (UTC).")
def retry(
    ident: str | None, thread: tuple[str, str] | None, where: str | None, at: str | None
) -> None:
    """Deliver now or at a time (RETRY [AT])."""
    _act(_ctx(), f"RETRY {_target(ident, thread, where)}" + (f" AT {at}" if at else ""))


@main.command()
@_with_target
@click.option("--reason", default="", help="The text in the DSN.")
def bounce(
    ident: str | None, thread: tuple[str, str] | None, where: str | None, reason: str
) -> None:
    """Fail the recipients now, with a DSN (BOUNCE)."""
    _act(
        _ctx(),
        f"BOUNCE {_target(ident, thread, where)}" + (f" {reason}" if reason else ""),
    )


@main.command()
@_with_target
def delete(
    ident: str | None, thread: tuple[str, str] | None, where: str | None
) -> None:
    """Remove without a DSN, into the trash (DELETE; UNDO brings it back)."""
    _act(_ctx(), f"DELETE {_target(ident, thread, where)}")


@main.command()
@click.argument("op")
def undo(op: str) -> None:
    """Reverse an operation (UNDO)."""
    _act(_ctx(), f"UNDO {op}")


@main.command()
@click.argument("selector", metavar="CHANNEL/HOST-GLOB")
@click.argument("reason", nargs=-1)
@click.option(
    "--for", "duration", metavar="DURATION", help="Lift by itself after (2h, 1d)."
)
def suspend(selector: str, reason: tuple[str, ...], duration: str | None) -> None:
    """Start no agent for matching threads (SUSPEND)."""
    text = f"SUSPEND {selector}" + (f" FOR {duration}" if duration else "")
    _act(_ctx(), text + (" " + " ".join(reason) if reason else ""))


@main.command()
@click.argument("rule")
def resume(rule: str) -> None:
    """Lift a suspension (RESUME)."""
    _act(_ctx(), f"RESUME {rule}")


@main.command("policy-set")
@click.argument("selector", metavar="CHANNEL/HOST-GLOB")
@click.option("--maxthr", type=int)
@click.option("--maxring", type=int)
@click.option(
    "--rate", metavar="N/PERIOD", help="Agent starts per period, like 100/1m."
)
@click.option("--for", "duration", metavar="DURATION")
def policy_set(
    selector: str,
    maxthr: int | None,
    maxring: int | None,
    rate: str | None,
    duration: str | None,
) -> None:
    """Runtime limits for matching threads (POLICY SET)."""
    parts = [f"POLICY SET {selector}"]
    if maxthr is not None:
        parts.append(f"maxthr={maxthr}")
    if maxring is not None:
        parts.append(f"maxring={maxring}")
    if rate:
        parts.append(f"rate={rate}")
    if duration:
        parts.append(f"FOR {duration}")
    _act(_ctx(), " ".join(parts))


@main.command("policy-delete")
@click.argument("rule")
def policy_delete(rule: str) -> None:
    """Remove a policy (POLICY DELETE)."""
    _act(_ctx(), f"POLICY DELETE {rule}")


if __name__ == "__main__":  # pragma: no cover - python -m mailq.client.ctl
    main()

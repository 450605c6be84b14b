"""The ``mailq`` command's options: ZMailer's usage errors, verbosity, credentials, ZENV.

From click's keyword arguments to one :class:`Options`; see docs/client.md.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import click

from mailq.client.errors import EX_USAGE
from mailq.client.library import resolve_port
from mailq.client.nagios import UNKNOWN, Range, Thresholds, check_unknown, parse_range
from spool.timefmt import parse_duration
from spool.zenv import read_zenv, zconfig_path

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_POSTOFFICE",
    "USAGE",
    "MailqCommand",
    "Options",
    "argv0_of",
    "build_options",
    "split_credentials",
    "usage_error",
    "verbosity",
]

USAGE = "Usage: {argv0} [-46isSvt] [-Z zenvcfgfile] [-cchannel -hhost] [-p#] [host]"
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


# -- usage errors -----------------------------------------------------------------------


class MailqCommand(click.Command):
    """ZMailer's usage error (text and exit 64) instead of click's."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["mailq.raw_args"] = list(args)
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            usage_error(ctx, exc)


def argv0_of(ctx: click.Context) -> str:
    """The name the command was run as (``mailq`` when click does not know it)."""
    return ctx.find_root().info_name or "mailq"


def usage_error(ctx: click.Context, exc: click.UsageError) -> NoReturn:
    """Print ZMailer's getopt message and usage line on stderr; exit 64. With
    ``--check``: the plugin's one UNKNOWN line on stdout, exit 3 (Nagios guidelines)."""
    argv0 = argv0_of(ctx)
    if "--check" in ctx.meta.get("mailq.raw_args", ()):
        text = exc.format_message().replace("\n", " ")
        click.echo(check_unknown(f"bad arguments: {text}").line)
        raise click.exceptions.Exit(UNKNOWN)
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
    top: bool = False
    watch: bool = False
    where: str | None = None
    clock: Callable[[], float] = field(default=time.time)


def _load_zenv(path: str | None) -> dict[str, str]:
    """``-Z FILE``, else the daemon's choice (:func:`spool.zenv.zconfig_path`)."""
    candidate = path or zconfig_path(os.environ)
    if candidate is None:
        return {}
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


def _range(option: str, text: str | None, *, duration: bool = False) -> Range | None:
    """A Nagios threshold range (durations at each end for ages); UsageError if bad."""
    if text is None:
        return None
    try:
        if duration:
            return parse_range(text, lambda t: float(parse_duration(t)))
        return parse_range(text)
    except ValueError as exc:
        raise click.UsageError(f"{option} {text!r}: {exc}") from None


def build_options(ctx: click.Context, kw: dict[str, Any]) -> Options:
    """The options of one run from click's keyword arguments; raises ``UsageError``."""
    zenv = _load_zenv(kw["zenv_file"])
    postoffice = (
        kw["postoffice"] or os.environ.get("POSTOFFICE") or zenv.get("POSTOFFICE")
    ) or DEFAULT_POSTOFFICE
    try:
        port = resolve_port(kw["port"])
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        user, password = _credentials(kw["credentials"], kw["password_file"])
    except OSError as exc:
        raise click.UsageError(f"cannot read password file: {exc.strerror}") from None
    obj = ctx.obj if isinstance(ctx.obj, dict) else {}
    return Options(
        argv0=argv0_of(ctx),
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
            warn_messages=_range("--warn-messages", kw["warn_messages"]),
            crit_messages=_range("--crit-messages", kw["crit_messages"]),
            warn_recipients=_range("--warn-recipients", kw["warn_recipients"]),
            crit_recipients=_range("--crit-recipients", kw["crit_recipients"]),
            warn_age=_range("--warn-age", kw["warn_age"], duration=True),
            crit_age=_range("--crit-age", kw["crit_age"], duration=True),
        ),
        timeout=kw["timeout"],
        top=kw.get("top", False),
        watch=kw.get("watch", False),
        where=kw.get("where"),
        clock=obj.get("clock", time.time),
    )

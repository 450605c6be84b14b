"""The ``mailq`` command: ZMailer's options and output, plus JSON, check and Prometheus modes.

The click entry point (console script ``mailq = mailq.client.cli:main``).  Option parsing is in
:mod:`mailq.client.options`, the local spool reads in :mod:`mailq.client.localspool`, the sessions
against the servers in :mod:`mailq.client.modes`.  See docs/client.md.
"""

from __future__ import annotations

from typing import Any

import click

from mailq import __version__
from mailq.client.errors import EX_OK
from mailq.client.modes import run
from mailq.client.options import (
    MailqCommand,
    build_options,
    split_credentials,
    usage_error,
    verbosity,
)

__all__ = ["main", "split_credentials", "verbosity"]


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
@click.option(
    "--warn-messages", metavar="RANGE", help="Nagios range: 10, 10:, ~:20, @10:20."
)
@click.option("--crit-messages", metavar="RANGE")
@click.option("--warn-recipients", metavar="RANGE")
@click.option("--crit-recipients", metavar="RANGE")
@click.option("--warn-age", metavar="RANGE", help="Durations: 4h, 30m:, @1h:1d.")
@click.option("--crit-age", metavar="RANGE")
@click.option(
    "--prometheus", is_flag=True, help="SNMP and COUNTERS in Prometheus text format."
)
@click.option(
    "--timeout", type=float, default=60.0, show_default=True, help="Seconds per reply."
)
@click.option("--top", is_flag=True, help="Live view, refreshed every second; q quits.")
@click.option("--watch", is_flag=True, help="Print delivery events as they happen.")
@click.option(
    "--where",
    metavar="FILTER",
    help="--watch filter (the SHOW MSGS filter language): channel= host= kind= id= diag~.",
)
@click.argument("hosts", nargs=-1)
@click.pass_context
def main(ctx: click.Context, /, **kw: Any) -> None:
    """Show the ZMailer scheduler's queue over MAILQ v2 (docs/client.md)."""
    if kw["version"]:
        click.echo(VERSION_TEXT.format(version=__version__), nl=False, err=True)
        ctx.exit(EX_OK)
    try:
        opts = build_options(ctx, kw)
    except click.UsageError as exc:
        usage_error(ctx, exc)
    ctx.exit(run(opts, local_counters=kw["local_counters"]))

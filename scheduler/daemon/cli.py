"""The ``mailq-scheduler`` command group (click).

Only ``check-config`` lives here; ``serve`` and ``demo`` are defined in their own modules
and imported when they are named (or listed by ``--help``): a daemon's start does not
import the demo.
"""

from __future__ import annotations

import gc
import importlib
import logging
import sys

import click

from scheduler.config.clauses import (
    SchedulerConfig,
    default_config,
    format_effective,
    load_config,
)
from scheduler.daemon.startcheck import config_problems, listener_problems
from scheduler.errors import ConfigError
from spool.zenv import read_zenv

__all__ = ["check_config", "main"]


class _Commands(click.Group):
    """A group whose other commands are imported on first use."""

    LAZY = {
        "demo": ("scheduler.demo.run", "demo"),
        "serve": ("scheduler.daemon.serve", "serve"),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.LAZY})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = super().get_command(ctx, cmd_name)
        if found is None and cmd_name in self.LAZY:
            module, name = self.LAZY[cmd_name]
            found = getattr(_import_quietly(module), name)
            assert isinstance(found, click.Command)
            self.add_command(found, cmd_name)
        return found


def _import_quietly(module: str) -> object:
    """``importlib.import_module`` with the garbage collector paused: an import makes
    long-lived objects only (a daemon's start imports ~280 modules, and the collections
    they set off find nothing: ~5-10 ms of CPU), so there is nothing to look for."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return importlib.import_module(module)
    finally:
        if enabled:
            gc.enable()


@click.group(cls=_Commands)
@click.version_option(package_name="zmailer-mailq", prog_name="mailq-scheduler")
def main() -> None:
    """A ZMailer-compatible scheduler with its MAILQ v2 interface."""


@main.command("check-config")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option(
    "-Z",
    "zenvfile",
    type=click.Path(dir_okay=False),
    help="ZENV file (zmailer.conf) instead of $ZCONFIG or the first readable default.",
)
def check_config(file: str | None, zenvfile: str | None) -> None:
    """Check FILE (default: the built-in configuration) and print the effective clauses.

    Exits 1 after printing every ``file:line: problem`` on stderr if it is invalid,
    has no clause, or a ``PARAMmailqsock`` listener spec does not parse.
    """
    logging.basicConfig(level=logging.ERROR, format="%(message)s")
    try:
        zenv = read_zenv(zenvfile)
    except OSError as e:
        click.echo(f"{zenvfile}: cannot read ZENV file: {e.strerror}", err=True)
        sys.exit(1)
    try:
        config: SchedulerConfig = (
            default_config(zenv) if file is None else load_config(file, zenv)
        )
    except ConfigError as e:
        for problem in e.problems:
            click.echo(str(problem), err=True)
        sys.exit(1)
    bad = [str(p) for p in config_problems(config)]
    bad += listener_problems(
        config.params.mailqsock, f"{config.source}: PARAMmailqsock"
    )
    if bad:
        for line in bad:
            click.echo(line, err=True)
        sys.exit(1)
    for warning in config.warnings:
        click.echo(f"{warning} (warning)", err=True)
    click.echo(format_effective(config, zenv), nl=False)

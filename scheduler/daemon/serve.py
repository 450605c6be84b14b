"""``mailq-scheduler serve``: run the scheduler daemon in the foreground (systemd style).

Defaults come from ZENV (``POSTOFFICE``, ``SCHEDULERDIRHASH``, ``MAILSHARE``,
``PARAMauthfile``); the environment ``MAILQ_SCHEDULER_*`` overrides them; flags override
everything. Logs go to stderr (and, with ``--syslog``, to syslog, facility mail), one
event per line.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path

import click

from scheduler.daemon.wiring import DaemonOptions, inherited_sockets, run_daemon
from spool.zenv import read_zenv

__all__ = ["serve"]

DEFAULT_POSTOFFICE = "/var/spool/postoffice"


class OneLineFormatter(logging.Formatter):
    """Every record on one line: embedded newlines become ``\\n``."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\r", "\\r").replace("\n", "\\n")


def setup_logging(level: int, use_syslog: bool, *, stats: bool = False) -> None:
    """Root logger at ``level``; the per-recipient statistics lines (``scheduler.stats``)
    only with ``stats`` or at DEBUG (ZMailer writes them only with ``-l``)."""
    root = logging.getLogger()
    root.setLevel(level)
    on = stats or level <= logging.DEBUG
    logging.getLogger("scheduler.stats").setLevel(
        logging.NOTSET if on else logging.WARNING
    )
    for handler in list(root.handlers):
        root.removeHandler(handler)
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(
        OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root.addHandler(stderr)
    if use_syslog:
        try:
            sysh = logging.handlers.SysLogHandler(
                address="/dev/log", facility=logging.handlers.SysLogHandler.LOG_MAIL
            )
        except OSError as exc:
            logging.getLogger(__name__).warning("no syslog: %s", exc)
        else:
            sysh.setFormatter(OneLineFormatter("scheduler[%(process)d]: %(message)s"))
            root.addHandler(sysh)


def _level(name: str | None, verbose: int) -> int:
    if name:
        value = logging.getLevelName(name.upper())
        if isinstance(value, int):
            return value
        raise click.BadParameter(
            f"unknown log level {name!r}", param_hint="--log-level"
        )
    return logging.DEBUG if verbose else logging.INFO


def _hash_levels(flag: int, zenv: dict[str, str]) -> int:
    if flag:
        return min(flag, 2)
    value = zenv.get("SCHEDULERDIRHASH", "").strip()
    return int(value) if value in ("1", "2") else 0


def _config_path(flag: str | None, zenv: dict[str, str]) -> str | None:
    if flag:
        return flag
    share = zenv.get("MAILSHARE")
    if share and Path(share, "scheduler.conf").is_file():
        return str(Path(share, "scheduler.conf"))
    return None


@click.command("serve")
@click.option(
    "-P",
    "--postoffice",
    envvar="MAILQ_SCHEDULER_POSTOFFICE",
    type=click.Path(file_okay=False),
    help="The postoffice (default: ZENV POSTOFFICE).",
)
@click.option(
    "-c",
    "--config",
    "config_path",
    envvar="MAILQ_SCHEDULER_CONFIG",
    type=click.Path(dir_okay=False),
    help="scheduler.conf (default: $MAILSHARE/scheduler.conf, else built in).",
)
@click.option(
    "-a",
    "--authfile",
    envvar="MAILQ_SCHEDULER_AUTHFILE",
    type=click.Path(dir_okay=False),
    help="scheduler.auth (default: PARAMauthfile, else $MAILSHARE/scheduler.auth).",
)
@click.option(
    "-l",
    "--listen",
    multiple=True,
    help="MAILQ v2 listener: TCP:174, 127.0.0.1:0, [::1]:174, UNIX:/path (repeatable).",
)
@click.option(
    "-Z", "zenvfile", type=click.Path(dir_okay=False), help="ZENV file (zmailer.conf)."
)
@click.option(
    "-H", "hash_flag", count=True, help="Hash the spool: -H one level, -HH two."
)
@click.option("--foreground", is_flag=True, help="Accepted for compatibility (always).")
@click.option("--syslog", "use_syslog", is_flag=True, help="Also log to syslog (mail).")
@click.option("--log-level", help="DEBUG, INFO, WARNING, ERROR.")
@click.option("-v", "--verbose", count=True, help="Debug logging.")
@click.option(
    "--stats",
    is_flag=True,
    help="Log a statistics line per delivered recipient (logger scheduler.stats; "
    "also on at DEBUG).",
)
@click.option("--pid-file", type=click.Path(dir_okay=False), help="Pid file path.")
@click.option("--replace", is_flag=True, help="Stop a running scheduler and take over.")
@click.option("--freeze", is_flag=True, help="Never start transport agents (-F).")
@click.option(
    "--ready-file",
    type=click.Path(dir_okay=False),
    help="Write the bound addresses here (one per line) once serving.",
)
@click.option(
    "--counters",
    metavar="PATH|none",
    help="Counter block file (default: ZENV SNMPSHAREDFILE, else "
    "$POSTOFFICE/.mailq-spool.counters); 'none' keeps the counters in memory.",
)
@click.option(
    "--metrics-listen",
    envvar="MAILQ_SCHEDULER_METRICS_LISTEN",
    metavar="[HOST:]PORT",
    help="Serve /metrics, /ready and /healthy over HTTP here (PORT alone: loopback; "
    "default: PARAMmetrics-listen, else off).",
)
@click.option("--max-sessions", type=click.IntRange(0), default=20, show_default=True)
@click.option("--session-lifetime", type=click.FloatRange(min=1), default=90.0)
@click.option(
    "--unix-owner",
    metavar="USER",
    help="Owner of Unix MAILQ v2 sockets (default: PARAMmailqsock-owner, else us).",
)
@click.option(
    "--unix-group",
    metavar="GROUP",
    help="Group of Unix MAILQ v2 sockets (default: PARAMmailqsock-group, else ours).",
)
@click.option(
    "--unix-mode",
    metavar="OCTAL",
    help="Mode of Unix MAILQ v2 sockets (default: PARAMmailqsock-mode, else 0666).",
)
@click.option(
    "--agent-timeout",
    type=click.FloatRange(min=0),
    help="Seconds a TA may stay silent on a job before it is killed and the job "
    "retried (default: PARAMagent-timeout, else 0 = no limit).",
)
@click.option(
    "--shutdown-timeout",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Seconds TAs get to exit before SIGTERM, then SIGKILL.",
)
def serve(
    postoffice: str | None,
    config_path: str | None,
    authfile: str | None,
    listen: tuple[str, ...],
    zenvfile: str | None,
    hash_flag: int,
    foreground: bool,
    use_syslog: bool,
    log_level: str | None,
    verbose: int,
    stats: bool,
    pid_file: str | None,
    replace: bool,
    freeze: bool,
    ready_file: str | None,
    counters: str | None,
    metrics_listen: str | None,
    max_sessions: int,
    session_lifetime: float,
    unix_owner: str | None,
    unix_group: str | None,
    unix_mode: str | None,
    agent_timeout: float | None,
    shutdown_timeout: float,
) -> None:
    """Run the scheduler daemon in the foreground until SIGTERM/SIGINT.

    Exit status: 0 stopped, 69 (EX_UNAVAILABLE) port in use or another scheduler
    running, 78 (EX_CONFIG) a configuration error (scheduler.conf, listener spec,
    not a postoffice); one line on stderr says why.
    """
    setup_logging(_level(log_level, verbose), use_syslog, stats=stats)
    mode = _mode(unix_mode)
    try:
        zenv = read_zenv(zenvfile)
    except OSError as exc:
        raise click.ClickException(
            f"{zenvfile}: cannot read ZENV file: {exc.strerror}"
        ) from exc
    po = Path(postoffice or zenv.get("POSTOFFICE") or DEFAULT_POSTOFFICE)
    if not listen and os.environ.get("MAILQ_SCHEDULER_LISTEN"):
        listen = tuple(os.environ["MAILQ_SCHEDULER_LISTEN"].split())
    opts = DaemonOptions(
        postoffice=po,
        zenv=zenv,
        config_path=_config_path(config_path, zenv),
        authfile=authfile,
        listen=listen,
        hash_levels=_hash_levels(hash_flag, zenv),
        pid_file=Path(pid_file) if pid_file else None,
        replace=replace,
        freeze=freeze,
        ready_file=Path(ready_file) if ready_file else None,
        max_sessions=max_sessions,
        session_lifetime=session_lifetime,
        shutdown_grace=shutdown_timeout,
        sockets=inherited_sockets(),
        counters=counters,
        metrics_listen=metrics_listen,
        unix_owner=unix_owner,
        unix_group=unix_group,
        unix_mode=mode,
        agent_timeout=agent_timeout,
    )
    sys.exit(run_daemon(opts))


def _mode(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o7777:
        raise click.BadParameter(
            f"{text!r} is not an octal mode", param_hint="--unix-mode"
        )
    return mode

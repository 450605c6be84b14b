"""scheduler.conf: clauses, inheritance, first-match selection (SCHED-REF 1).

``parse_config`` is pure (text in, frozen :class:`SchedulerConfig` out, every problem
collected into one :class:`~scheduler.errors.ConfigError`); ``load_config`` and
``default_config`` are the thin shells that read files.  ``match`` is called for every
vertex, so its results are cached per (channel, host).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from scheduler.config.globs import compile_glob
from scheduler.config.parser import UNSET, RawClause, RawParams, build
from scheduler.errors import ConfigError, ConfigProblem
from spool.timefmt import saytime
from spool.zenv import expand, read_zenv

__all__ = [
    "BUILTIN",
    "DEFAULT_CONFIG_TEXT",
    "Clause",
    "Params",
    "SchedulerConfig",
    "default_config",
    "describe_program",
    "expand_command",
    "fallback_clause",
    "format_effective",
    "load_config",
    "parse_config",
    "program_argv",
]

log = logging.getLogger(__name__)

UNLIMITED = 10000  # what maxta/maxchannel/maxring <= 0 mean
DEFAULT_MAILBIN = "/usr/lib/zmailer"  # when ZENV has no MAILBIN


@dataclass(frozen=True, slots=True)
class Clause:
    """One clause with every value resolved (SCHED-REF 1.4 step 4, 1.5)."""

    selector: str = "*/*"
    channel_pattern: str = "*"
    host_pattern: str = "*"
    line: int = 0
    file: str = "<built-in>"
    interval: int = 3600  # unset -> 3600
    idlemax: int = 10800  # unset -> 3 * interval (S13 fixed)
    expiry: int = 0  # 0 = none
    expiry2: int = 0  # extra grace as written; 0 = unset (the core uses 24 h then)
    retries: tuple[int, ...] = ()
    skew: int = 5
    maxta: int = UNLIMITED
    maxchannel: int = UNLIMITED
    maxring: int = UNLIMITED
    maxthr: int = 1
    overfeed: int = 0
    command: str | None = None
    argv: tuple[str, ...] = ()
    withhost: bool = False  # some argv word is exactly "$host"
    queueonly: bool = False
    wakeuprestartonly: bool = False
    ageorder: bool = False
    uid: int | None = None  # None: the TA keeps the scheduler's uid
    gid: int | None = None
    priority: int | None = None  # absolute nice for the TA (S12 fixed); None: unchanged
    nice: int = 0  # relative nice for the TA
    reporttimes: tuple[int, ...] = ()  # as written; only [0] is used (S26); () = unset
    deliveryform: str | None = None  # parsed, stored, unused (S26)
    expiryform: str | None = None


@dataclass(frozen=True, slots=True)
class Params:
    """Global ``PARAM`` settings (SCHED-REF 1.6) and the process-wide clause keywords."""

    authfile: str | None = None
    mailqsock: tuple[str, ...] = ()  # every PARAMmailqsock, in file order
    notifysock: str | None = None
    metrics_listen: str | None = None  # PARAMmetrics-listen (docs/monitoring.md)
    global_report_interval: int = 300
    msgwriteasync: bool = False
    store_error_on_error: bool = False
    syspriority: int | None = None  # for the scheduler itself; apply once (S47 fixed)
    sysnice: int | None = None
    mailqsock_owner: str | None = None  # Unix MAILQ v2 sockets: owner, group, mode
    mailqsock_group: str | None = None
    mailqsock_mode: int | None = None
    agent_timeout: int | None = None  # seconds of TA silence on a job (0: none)
    # MAILQ v2 session defences (issue 14): probation seats past the limit, and sessions
    # one address may hold before its newcomers are on probation (0: ZMailer's behaviour)
    mailq_reserved_sessions: int | None = None
    mailq_max_per_peer: int | None = None


_NOT_CACHED = object()
_CACHE_LIMIT = 200_000


@dataclass(frozen=True)
class SchedulerConfig:
    clauses: tuple[Clause, ...]  # non-default clauses, file order
    default: Clause
    params: Params
    source: str
    warnings: tuple[ConfigProblem, ...] = ()
    _cache: dict[tuple[str, str], Clause | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _matchers: tuple[_Matcher, ...] = field(
        default=(), init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        matchers = tuple(
            (compile_glob(c.channel_pattern), _host_matcher(c.host_pattern), c)
            for c in self.clauses
            if c.channel_pattern != "*"  # S3: never chosen
        )
        object.__setattr__(self, "_matchers", matchers)

    def match(self, channel: str, host: str) -> Clause | None:
        """The first clause (file order) matching both names; None if none does."""
        key = (channel, host)
        hit = self._cache.get(key, _NOT_CACHED)
        if hit is not _NOT_CACHED:
            return hit  # type: ignore[return-value]
        channel, host = channel.lower(), host.lower()
        found = next(
            (c for ch, ho, c in self._matchers if ch(channel) and ho(host)), None
        )
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = found
        return found


_Matcher = tuple[Callable[[str], bool], Callable[[str], bool], Clause]


def _host_matcher(pattern: str) -> Callable[[str], bool]:
    if pattern in ("", "*"):  # matches any host without further checks
        return lambda host: True
    return compile_glob(pattern)


def fallback_clause(config: SchedulerConfig) -> Clause:
    """The clause for a recipient no clause matches (S6 fixed): defaults, no command."""
    return dataclasses.replace(config.default, command=None, argv=(), withhost=False)


def parse_config(
    text: str, source: str = "<string>", zenv: Mapping[str, str] | None = None
) -> SchedulerConfig:
    """Parse scheduler.conf text; raises ConfigError listing every problem found.

    ``zenv`` expands ``${NAME}`` in authfile/mailqsock/notifysock (None: nothing is
    expanded).  Warnings (S1, S3, S10, S48 ...) are in ``.warnings`` and logged.
    """
    result = build(text, source, zenv or {})
    if result.errors:
        raise ConfigError(result.errors)
    for w in result.warnings:
        log.warning("%s", w)
    clauses = tuple(_resolve(c) for c in result.clauses)
    default = _resolve(result.default)
    problems = _check_builtins((default, *clauses))
    if problems:
        raise ConfigError(problems)
    return SchedulerConfig(
        clauses=clauses,
        default=default,
        params=_params(result.params),
        source=source,
        warnings=tuple(result.warnings),
    )


def _resolve(raw: RawClause) -> Clause:
    """Fill in "unset" values as a thread group does (SCHED-REF 1.4 step 4)."""
    interval = 3600 if raw.interval == UNSET else raw.interval
    return Clause(
        selector=raw.selector,
        channel_pattern=raw.channel_pattern,
        host_pattern=raw.host_pattern,
        line=raw.line,
        file=raw.file,
        interval=interval,
        idlemax=3 * interval if raw.idlemax == UNSET else raw.idlemax,
        expiry=max(raw.expiry, 0),
        expiry2=max(raw.expiry2, 0),
        retries=raw.retries,
        skew=raw.skew,
        maxta=raw.maxta if raw.maxta > 0 else UNLIMITED,
        maxchannel=raw.maxchannel if raw.maxchannel > 0 else UNLIMITED,
        maxring=raw.maxring if raw.maxring > 0 else UNLIMITED,
        maxthr=max(raw.maxthr, 1),
        overfeed=max(raw.overfeed, 0),
        command=raw.command,
        argv=raw.argv,
        withhost=raw.withhost,
        queueonly=raw.queueonly,
        wakeuprestartonly=raw.wakeuprestartonly,
        ageorder=raw.ageorder,
        uid=raw.uid,
        gid=raw.gid,
        priority=raw.priority,
        nice=raw.nice,
        reporttimes=raw.reporttimes,
        deliveryform=raw.deliveryform,
        expiryform=raw.expiryform,
    )


def _params(raw: RawParams) -> Params:
    return Params(
        authfile=raw.authfile,
        mailqsock=tuple(raw.mailqsock),
        notifysock=raw.notifysock,
        metrics_listen=raw.metrics_listen,
        global_report_interval=raw.global_report_interval,
        msgwriteasync=raw.msgwriteasync,
        store_error_on_error=raw.store_error_on_error,
        syspriority=raw.syspriority,
        sysnice=raw.sysnice,
        mailqsock_owner=raw.mailqsock_owner,
        mailqsock_group=raw.mailqsock_group,
        mailqsock_mode=raw.mailqsock_mode,
        agent_timeout=raw.agent_timeout,
        mailq_reserved_sessions=raw.mailq_reserved_sessions,
        mailq_max_per_peer=raw.mailq_max_per_peer,
    )


def load_config(path: str, zenv: Mapping[str, str] | None = None) -> SchedulerConfig:
    """Read and parse a scheduler.conf (None zenv: :func:`read_zenv`)."""
    env = read_zenv() if zenv is None else zenv
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError([ConfigProblem(path, 0, f"cannot read: {e.strerror}")]) from e
    return parse_config(text, path, env)


def default_config(zenv: Mapping[str, str] | None = None) -> SchedulerConfig:
    """The built-in configuration: the shipped proto ``scheduler.conf`` (SCHED-REF 1.9)."""
    env = read_zenv() if zenv is None else zenv
    return parse_config(DEFAULT_CONFIG_TEXT, "<built-in>", env)


# --- the TA command line (SCHED-REF 1.8) --------------------------------------------------

_REF = re.compile(r"\$\{([^}]*)\}")
_TA_ENV_FROM_ZENV = ("PATH", "ZCONFIG", "POSTOFFICE", "MAILBIN", "MAILBOX", "MAILSHARE")


def expand_command(
    clause: Clause, channel: str, host: str, zenv: Mapping[str, str]
) -> tuple[dict[str, str], list[str]]:
    """The environment and argv to start a TA of ``clause`` for (channel, host).

    ``$host``/``$channel`` as whole words, ``${host}``/``${channel}``/``${ZENVVAR}``
    inside words (undefined: empty); leading ``VAR=value`` words go to the environment;
    the program is resolved by :func:`program_argv`.  Raises ConfigError if the clause
    has no command.
    """
    if not clause.argv:
        raise ConfigError(
            [ConfigProblem(clause.file, clause.line, "ConfBUG:NoCmdDefined!")]
        )
    names = {"host": host, "channel": channel}

    def word(w: str) -> str:
        if w == "$host":
            return host
        if w == "$channel":
            return channel
        return _REF.sub(lambda m: names.get(m.group(1), zenv.get(m.group(1), "")), w)

    words = [word(w) for w in clause.argv]
    env: dict[str, str] = {}
    if "TZ" in os.environ:
        env["TZ"] = os.environ["TZ"]
    for name in _TA_ENV_FROM_ZENV:
        if name in zenv:
            env[name] = zenv[name]
    i = 0
    while i < len(words) - 1 and "=" in words[i]:
        key, _, value = words[i].partition("=")
        env[key] = value
        i += 1
    program, args = words[i], words[i + 1 :]
    return env, [*program_argv(program, zenv), *args]


BUILTIN = "builtin:"
"""The prefix that names one of our own agents: ``command="builtin:mailbox -8"``."""


def program_argv(program: str, zenv: Mapping[str, str]) -> list[str]:
    """The argv prefix that runs ``program`` (the first non-``VAR=`` command word).

    As ZMailer does, an absolute path runs as it is and any other name runs the
    site's ``$MAILBIN/ta/<name>``; our own agents (``scheduler.ta.<name>``) run only
    when named explicitly as ``builtin:<name>``.
    """
    if program.startswith(BUILTIN):
        return [sys.executable, "-m", f"scheduler.ta.{program[len(BUILTIN) :]}"]
    if program.startswith("/"):
        return [program]
    return [f"{zenv.get('MAILBIN', DEFAULT_MAILBIN)}/ta/{program}"]


def command_program(argv: Sequence[str]) -> str | None:
    """The program word of a clause's command (after leading ``VAR=value`` words)."""
    i = 0
    while i < len(argv) - 1 and "=" in argv[i]:
        i += 1
    return argv[i] if argv else None


def describe_program(argv: Sequence[str], zenv: Mapping[str, str]) -> str:
    """What a clause's command runs, for ``check-config``."""
    program = command_program(argv)
    if program is None:
        return "nothing (no command)"
    program = expand(program, zenv)
    if program.startswith(BUILTIN):
        return f"built-in agent scheduler.ta.{program[len(BUILTIN) :]}"
    path = program_argv(program, zenv)[0]
    if "$" in path:
        return f"{path} (expanded per thread)"
    exists = os.access(path, os.X_OK)
    return path + ("" if exists else "  (NOT FOUND or not executable)")


def _check_builtins(clauses: Sequence[Clause]) -> list[ConfigProblem]:
    problems = []
    for c in clauses:
        program = command_program(c.argv)
        if program and program.startswith(BUILTIN):
            name = program[len(BUILTIN) :]
            if not _own_agent(name):
                problems.append(
                    ConfigProblem(c.file, c.line, f"no built-in agent {name!r}")
                )
    return problems


@lru_cache(maxsize=256)
def _own_agent(name: str) -> bool:
    if not name.isidentifier():
        return False
    try:
        return importlib.util.find_spec(f"scheduler.ta.{name}") is not None
    except (ImportError, ValueError):
        return False


# --- check-config output ------------------------------------------------------------------


def format_effective(
    config: SchedulerConfig, zenv: Mapping[str, str] | None = None
) -> str:
    """Every resolved value, one clause per block, in scheduler.conf syntax.

    The output parses back to the same effective configuration (without user/group
    names: ids are printed).  With ``zenv``, each command is followed by a comment
    naming the program it runs (``$MAILBIN/ta/...``, or a built-in agent).
    """
    out = [f"# effective configuration from {config.source}"]
    out += _format_params(config.params)
    for clause in (config.default, *config.clauses):
        out.append("")
        out += _format_clause(clause, clause is config.default, zenv)
    return "\n".join(out) + "\n"


def _format_params(p: Params) -> list[str]:
    out = []
    if p.authfile is not None:
        out.append(f'PARAMauthfile = "{p.authfile}"')
    out += [f'PARAMmailqsock = "{s}"' for s in p.mailqsock]
    if p.notifysock is not None:
        out.append(f'PARAMnotifysock = "{p.notifysock}"')
    if p.metrics_listen is not None:
        out.append(f'PARAMmetrics-listen = "{p.metrics_listen}"')
    for key, value in (
        ("mailqsock-owner", p.mailqsock_owner),
        ("mailqsock-group", p.mailqsock_group),
    ):
        if value is not None:
            out.append(f'PARAM{key} = "{value}"')
    if p.mailqsock_mode is not None:
        out.append(f"PARAMmailqsock-mode = {p.mailqsock_mode:04o}")
    if p.agent_timeout is not None:
        out.append(f"PARAMagent-timeout = {p.agent_timeout}")
    if p.mailq_reserved_sessions is not None:
        out.append(f"PARAMmailq-reserved-sessions = {p.mailq_reserved_sessions}")
    if p.mailq_max_per_peer is not None:
        out.append(f"PARAMmailq-max-per-peer = {p.mailq_max_per_peer}")
    out.append(f"PARAMglobal-report-interval = {p.global_report_interval}")
    out.append(f"PARAMmsgwriteasync = {int(p.msgwriteasync)}")
    out.append(f"PARAMstore-error-on-error = {int(p.store_error_on_error)}")
    return out


def _format_clause(
    c: Clause, is_default: bool, zenv: Mapping[str, str] | None
) -> list[str]:
    note = "default clause, never matched itself" if is_default else "clause"
    if not is_default and c.channel_pattern == "*":
        note = "never matches: channel pattern '*' (S3)"
    out = [f"# {c.file}:{c.line}: {note}", c.selector]

    def time(name: str, value: int) -> None:
        out.append(f"\t{name}={value}" + (f"\t# {saytime(value)}" if value else ""))

    time("interval", c.interval)
    time("idlemax", c.idlemax)
    time("expiry", c.expiry)
    time("expiry2", c.expiry2)
    if c.retries:
        out.append(f'\tretries="{" ".join(map(str, c.retries))}"')
    out.append(f"\tskew={c.skew}")
    out += [
        f"\t{name}={getattr(c, name)}"
        for name in ("maxta", "maxchannel", "maxring", "maxthr", "overfeed")
    ]
    if c.command is not None:
        out.append(
            f"\tcommand={_quote(c.command)}" + ("\t# withhost" if c.withhost else "")
        )
        if zenv is not None:
            out.append(f"\t# runs {describe_program(c.argv, zenv)}")
    if c.uid is not None:
        out.append(f"\tuser={c.uid}")
    if c.gid is not None:
        out.append(f"\tgroup={c.gid}")
    if c.priority is not None:
        out.append(f"\tpriority={c.priority}")
    elif c.nice:
        out.append(f"\tnice={c.nice}")
    out += [
        f"\t{f}"
        for f in ("queueonly", "wakeuprestartonly", "ageorder")
        if getattr(c, f)
    ]
    if c.reporttimes:
        out.append(f'\treporttimes="{" ".join(map(str, c.reporttimes))}"')
    for name in ("deliveryform", "expiryform"):
        value = getattr(c, name)
        if value is not None:
            out.append(f"\t{name}={_quote(value)}")
    return out


def _quote(value: str) -> str:
    return f'"{value}"' if (" " in value or "\t" in value or not value) else value


# The shipped proto/scheduler.conf.in as SCHED-REF 1.9 shows it (the reference's own
# "##" annotations dropped).
DEFAULT_CONFIG_TEXT = """\
PARAMauthfile = "${MAILSHARE}/scheduler.auth"
#PARAMmailqsock = "UNIX:/path/to/mailq.sock"
#PARAMglobal-report-interval = 15m

*/*\tinterval=1m
\tidlemax=4m      # Max lifetime of idled TA before it is killed
\texpiry=5d
\texpiry2=2d
\tretries="1 1 2 3 5 8 13 21 34"
\tmaxchannel=0
\tmaxring=20
\tmaxta=0
\tuser=root
\tgroup=daemon
\toverfeed=150

hold/*\tinterval=5m maxchannel=1 command=hold

local/file*
local/pipe*
\tinterval=5m idlemax=9m expiry=5d maxchannel=15 maxring=5
\tcommand="mailbox -8"

local/*\tinterval=5m idlemax=9m expiry=5d maxchannel=15 maxring=5
\tcommand="mailbox"

smtp/*-gw.funet.fi
\tmaxchannel=0 maxring=5 expiry=1m interval=15s retries="1" skew=1
\tcommand="smtp -s"

smtp/*.{se,dk,is,no}  maxchannel=199 maxring=20 command="smtp -s"
smtp/*.fi\tmaxchannel=199 maxring=20 interval=10m
\t\tretries="1 1 2 3 5 8 13 21 34" skew=1 command="smtp -s"

smtp/*\tmaxchannel=199 maxring=50 command="smtp -s"

smtp-par/*
\tmaxchannel=999 maxring=50 maxthr=10 overfeed=2
\tinterval=1m retries="1 1" skew=1
\tcommand="smtp -c smtp-par -s"

smtp-etrn/*
\tmaxchannel=199 maxring=20 interval=1h retries="12" queueonly
\tcommand="smtp -c $channel -s"

error/*\tinterval=5m idlemax=2m maxchannel=5 command=errormail
uucp/*\tmaxchannel=5 command="sm -8c $channel uucp"
bitbucket/* maxchannel=1 command="sm -c $channel bitbucket"
"""

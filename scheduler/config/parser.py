"""The scheduler.conf clause builder (SCHED-REF 1.3-1.6).  Pure: no I/O.

Tokens (:mod:`scheduler.config.lexer`) become raw clauses and ``PARAM`` values with
ZMailer's "unset" markers; values are read by :mod:`scheduler.config.values`.
:mod:`scheduler.config.clauses` resolves the result into its frozen configuration.
"""

from __future__ import annotations

import dataclasses
import grp
import pwd
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from scheduler.config.lexer import Kind, Token, tokenize
from scheduler.config.values import original_interval, parse_time, selector_warnings
from scheduler.errors import ConfigProblem
from spool.zenv import expand

__all__ = [
    "FILL_FIELDS",
    "UNSET",
    "Built",
    "Kind",
    "RawClause",
    "RawParams",
    "Token",
    "build",
    "original_interval",
    "parse_time",
    "selector_warnings",
    "tokenize",
]

UNSET = -1


@dataclass(slots=True)
class RawClause:
    """A clause as written, with ZMailer's "unset" markers (SCHED-REF 1.4 step 1)."""

    selector: str
    channel_pattern: str
    host_pattern: str
    line: int
    file: str
    interval: int = UNSET
    idlemax: int = UNSET
    expiry: int = UNSET
    expiry2: int = UNSET
    uid: int | None = None
    gid: int | None = None
    command: str | None = None
    argv: tuple[str, ...] = ()
    withhost: bool = False
    ageorder: bool = False
    queueonly: bool = False
    wakeuprestartonly: bool = False
    maxta: int = UNSET
    maxchannel: int = UNSET
    maxring: int = UNSET
    maxthr: int = 1
    retries: tuple[int, ...] = ()
    reporttimes: tuple[int, ...] = ()
    skew: int = 5
    overfeed: int = 0
    priority: int | None = None
    nice: int = 0
    deliveryform: str | None = None
    expiryform: str | None = None
    nparams: int = 0


# What an empty clause takes from the next non-empty one (not skew, deliveryform,
# reporttimes: S5).  "nice" shares its storage with "priority" in the original.
FILL_FIELDS = (
    "interval", "idlemax", "expiry", "expiry2", "expiryform", "uid", "gid", "command",
    "argv", "withhost", "ageorder", "queueonly", "wakeuprestartonly", "maxta",
    "maxchannel", "maxthr", "maxring", "retries", "overfeed", "priority", "nice",
)  # fmt: skip


@dataclass(slots=True)
class RawParams:
    authfile: str | None = None
    mailqsock: list[str] = field(default_factory=list)
    notifysock: str | None = None
    metrics_listen: str | None = None
    global_report_interval: int = 300
    msgwriteasync: bool = False
    store_error_on_error: bool = False
    syspriority: int | None = None
    sysnice: int | None = None
    mailqsock_owner: str | None = None
    mailqsock_group: str | None = None
    mailqsock_mode: int | None = None
    agent_timeout: int | None = None
    mailq_reserved_sessions: int | None = None
    mailq_max_per_peer: int | None = None


@dataclass(slots=True)
class Built:
    default: RawClause
    clauses: list[RawClause]
    params: RawParams
    errors: list[ConfigProblem]
    warnings: list[ConfigProblem]


def build(text: str, source: str, zenv: Mapping[str, str]) -> Built:
    """Tokenize and build the raw clauses; every problem is collected, nothing raised."""
    tokens, errors = tokenize(text, source)
    builder = _Builder(source, zenv, errors)
    for token in tokens:
        builder.feed(token)
    builder.finish()
    errors.sort(key=lambda p: p.line)
    builder.warnings.sort(key=lambda p: p.line)
    return Built(
        builder.default, builder.clauses, builder.params, errors, builder.warnings
    )


_ALIASES = {
    "maxtransport": "maxta",
    "maxtransports": "maxta",
    "maxchannels": "maxchannel",
    "maxrings": "maxring",
}
_FLAGS = ("queueonly", "wakeuprestartonly", "ageorder", "bychannel")
_TIMES = ("interval", "idlemax", "expiry", "expiry2")
_INTS = ("maxta", "maxchannel", "maxring", "maxthr", "overfeed")
_STRINGS = ("deliveryform", "expiryform")
_VALUED = (
    *_TIMES, *_INTS, *_STRINGS, "retries", "skew", "command", "user", "group",
    "priority", "nice", "syspriority", "sysnice", "reporttimes",
)  # fmt: skip
_INTEGER = re.compile(r"[+-]?\d+")
_LEADING_INT = re.compile(r"\s*[+-]?\d+")
_MAX_WORDS = 100


class _Builder:
    def __init__(
        self, source: str, zenv: Mapping[str, str], errors: list[ConfigProblem]
    ) -> None:
        self.source = source
        self.zenv = zenv
        self.errors = errors
        self.warnings: list[ConfigProblem] = []
        self.default = RawClause("*/*", "*", "*", 0, source)
        self.clauses: list[RawClause] = []
        self.params = RawParams()
        self.current: RawClause | None = None
        self.pending_empty: list[RawClause] = []
        self.line = 0

    def error(self, message: str) -> None:
        self.errors.append(ConfigProblem(self.source, self.line, message))

    def warn(self, message: str) -> None:
        self.warnings.append(ConfigProblem(self.source, self.line, message))

    def feed(self, token: Token) -> None:
        self.line = token.line
        if token.kind is Kind.SELECTOR:
            self.start_clause(token.name)
        elif token.kind is Kind.PARAM:
            self.param(token.name, token.value or "")
        elif self.current is None:
            self.error(f"illegal syntax ({token.name!r} before the first selector)")
        else:
            self.keyword(self.current, token)

    # -- clauses -------------------------------------------------------------------------

    def start_clause(self, selector: str) -> None:
        self.finish_clause()
        if selector in ("*/*", "*"):
            if not self.default.line:
                self.default.line = self.line
            self.current = self.default
            return
        channel, slash, host = selector.partition("/")
        clause = dataclasses.replace(
            self.default,
            selector=selector,
            channel_pattern=channel,
            host_pattern=host if slash else "*",
            line=self.line,
            nparams=0,
        )
        self.clauses.append(clause)
        self.current = clause
        for message in selector_warnings(selector, channel, host):
            self.warn(message)

    def finish_clause(self) -> None:
        clause, self.current = self.current, None
        if clause is None or clause is self.default:
            return
        if clause.nparams == 0:
            self.pending_empty.append(clause)
            return
        for empty in self.pending_empty:
            for name in FILL_FIELDS:
                setattr(empty, name, getattr(clause, name))
        self.pending_empty.clear()

    def finish(self) -> None:
        self.finish_clause()
        for empty in self.pending_empty:
            self.warnings.append(
                ConfigProblem(
                    self.source,
                    empty.line,
                    f"clause {empty.selector!r} has no parameters and no later clause"
                    " gives it any: it keeps the default values",
                )
            )
        for clause in self.clauses:
            if clause.command is None and clause.channel_pattern != "*":
                self.warnings.append(
                    ConfigProblem(
                        self.source,
                        clause.line,
                        f"clause {clause.selector!r} has no command: its threads never"
                        " run (pend=ConfBUG:NoCmdDefined!)",
                    )
                )

    # -- PARAM lines ---------------------------------------------------------------------

    def param(self, name: str, value: str) -> None:
        key = name.lower()
        p = self.params
        if key == "authfile":
            p.authfile = expand(value, self.zenv)
        elif key == "mailqsock":
            p.mailqsock.append(expand(value, self.zenv))
        elif key == "notifysock":
            p.notifysock = expand(value, self.zenv)
        elif key == "metrics-listen":
            p.metrics_listen = expand(value, self.zenv)
        elif key == "global-report-interval":
            seconds = self.time(f"PARAM{name}", value)
            if seconds <= 0:
                self.error(f"bad value PARAM{name} = {value!r}: must be > 0")
            p.global_report_interval = seconds
        elif key in ("mailqsock-owner", "mailqsock-group"):
            setattr(p, key.replace("-", "_"), value.strip())
        elif key == "mailqsock-mode":
            try:
                p.mailqsock_mode = int(value.strip(), 8)
            except ValueError:
                self.error(f"bad value PARAM{name} = {value!r}: an octal file mode")
                return
            if not 0 <= p.mailqsock_mode <= 0o7777:
                self.error(f"bad value PARAM{name} = {value!r}: an octal file mode")
        elif key == "agent-timeout":
            seconds = self.time(f"PARAM{name}", value)
            if seconds < 0:
                self.error(f"bad value PARAM{name} = {value!r}: must be >= 0")
            p.agent_timeout = seconds
        elif key in ("mailq-reserved-sessions", "mailq-max-per-peer"):
            number = self.integer(f"PARAM{name}", value)
            if number < 0:
                self.error(f"bad value PARAM{name} = {value!r}: must be >= 0")
            setattr(p, key.replace("-", "_"), number)
        elif key in ("msgwriteasync", "store-error-on-error"):
            number = self.integer(f"PARAM{name}", value)
            setattr(p, key.replace("-", "_"), bool(number))
        else:
            self.error(f"illegal syntax (unknown PARAM{name})")

    # -- clause keywords -----------------------------------------------------------------

    def keyword(self, clause: RawClause, token: Token) -> None:
        written = token.name
        key = _ALIASES.get(written.lower(), written.lower())
        value = token.value
        if key not in _FLAGS and key not in _VALUED:
            self.error(f"unknown keyword {written}")
            return
        clause.nparams += 1
        if key in _FLAGS:
            if value is not None:
                self.warn(
                    f"{written}={value}: a value is ignored, the flag is set anyway (S48)"
                )
            if key != "bychannel":
                setattr(clause, key, True)
            return
        if value is None:
            self.error(f"illegal syntax ({written} needs '=value', S7)")
            return
        if key in _TIMES:
            seconds = self.time(written, value)
            if key == "interval" and seconds <= 0:
                self.error(f"bad interval {value!r}: must be > 0 (S8)")
            setattr(clause, key, seconds)
        elif key in _INTS:
            setattr(clause, key, self.integer(written, value))
        elif key in _STRINGS:
            setattr(clause, key, value)
        else:
            getattr(self, f"kw_{key}")(clause, value)

    def time(self, name: str, value: str) -> int:
        seconds, rest = parse_time(value)
        if rest:
            self.warn(f"{name}={value}: {rest!r} after the time value is ignored")
        original = original_interval(value)
        if original != seconds:
            self.warn(
                f"{name}={value} is read as {seconds} s; ZMailer read it as"
                f" {original} s (S1)"
            )
        return seconds

    def integer(self, name: str, value: str) -> int:
        if not _INTEGER.fullmatch(value):
            self.error(f"bad value {name}={value!r}: an integer is expected")
            return 0
        return int(value)

    def kw_retries(self, clause: RawClause, value: str) -> None:
        words = value.split()
        if not words:
            self.error("empty retry factor list")
            return
        factors: list[int] = []
        for word in words:
            m = _LEADING_INT.match(word)
            number = int(m.group(0)) if m else 0
            if number <= 0:
                self.error(f"not a numeric factor: {word}")
                return
            if m and m.end() != len(word):
                self.warn(f"retry factor {word!r} is read as {number}")
            factors.append(number)
        if len(factors) > _MAX_WORDS:
            self.warn(f"more than {_MAX_WORDS} retry factors: the rest are ignored")
        clause.retries = tuple(factors[:_MAX_WORDS])

    def kw_skew(self, clause: RawClause, value: str) -> None:
        m = re.match(r"\d+", value)
        if m is None or int(m.group(0)) < 1:
            self.error(f"bad skew value: {value}")
            return
        clause.skew = int(m.group(0))

    def kw_reporttimes(self, clause: RawClause, value: str) -> None:
        times = [self.time("reporttimes", w) for w in value.split()]
        if not times or len(times) > 4 or min(times) <= 0:
            self.error(f"bad reporttimes value: {value!r} (1 to 4 times, each > 0)")
            return
        clause.reporttimes = tuple(times)

    def kw_command(self, clause: RawClause, value: str) -> None:
        argv = value.split()
        if not argv:
            self.error("illegal syntax (empty command)")
            return
        if all("=" in w for w in argv):
            self.error(f"command {value!r} has no program (only VAR=value words)")
            return
        if len(argv) > _MAX_WORDS:
            self.warn(f"command has more than {_MAX_WORDS} words: the rest are ignored")
            argv = argv[:_MAX_WORDS]
        if any("${host}" in w for w in argv) and "$host" not in argv:
            self.warn(
                "'${host}' is substituted but only a '$host' word makes threads per host (S11)"
            )
        clause.command = value
        clause.argv = tuple(argv)
        clause.withhost = "$host" in argv

    def kw_user(self, clause: RawClause, value: str) -> None:
        if value[:1].isdigit():
            clause.uid = self.integer("user", value)
            return
        try:
            clause.uid = pwd.getpwnam(value).pw_uid
        except KeyError:
            self.error(f"unknown user: {value}")

    def kw_group(self, clause: RawClause, value: str) -> None:
        if value[:1].isdigit():
            clause.gid = self.integer("group", value)
            return
        try:
            clause.gid = grp.getgrnam(value).gr_gid
        except KeyError:
            self.error(f"unknown group: '{value}'")

    def ranged(self, value: str, low: int, high: int, what: str) -> int | None:
        if _INTEGER.fullmatch(value) and low <= int(value) <= high:
            return int(value)
        self.error(
            f'Bad UNIX {what} value, acceptable in range: {low}..{high}; input="{value}"'
        )
        return None

    def kw_priority(self, clause: RawClause, value: str) -> None:
        number = self.ranged(value, -20, 19, "priority")
        if number is not None:
            clause.priority, clause.nice = number, 0

    def kw_nice(self, clause: RawClause, value: str) -> None:
        number = self.ranged(value, -40, 39, "nice offset")
        if number is not None:
            clause.priority, clause.nice = None, number

    def kw_syspriority(self, clause: RawClause, value: str) -> None:
        self.params.syspriority = self.ranged(value, -20, 19, "priority")

    def kw_sysnice(self, clause: RawClause, value: str) -> None:
        self.params.sysnice = self.ranged(value, -40, 39, "nice offset")

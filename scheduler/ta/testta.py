"""A scripted transport agent for tests, replays and benchmarks.

``python -m scheduler.ta.testta [-c channel] [-P postoffice] [host]`` speaks the full TA
protocol through :mod:`scheduler.ta.libta` and answers by rules from the environment.
Without ``-c`` it serves recipients of *every* channel on the job's host (``-c $channel``
restricts it, as a real agent would be).

``TESTTA_RULES``
    ``pattern=status`` pairs separated by ``;``, first match wins, matched (fnmatch,
    lower-case) against the recipient address, e.g.
    ``*@ok.example=ok;*@fail.example=error;*=deferred``. Default ``*=ok``.
    Statuses: ``ok``, ``ok3``, ``error``, ``deferred``, ``deferall``, ``deferback``,
    ``retryat`` (reports ``retryat +60 <diag>``), and two misbehaviours for tests:
    ``crash`` (exit at once, leaving the lock ``~`` + a dead PID) and ``garbage`` (print a
    malformed line, then report ``deferred``).
``TESTTA_SLEEP``
    seconds to sleep per job, before delivering.
``TESTTA_LOG``
    file to which each job line is appended as ``<epoch>\\t<job line>``.
``TESTTA_DIAG``
    the message text to report (and the notary diagnostic), e.g.
    ``smtp; 500 (connect to 127.0.0.1 [127.0.0.1|9|127.0.0.1|48553]: Connection refused)``.
``TESTTA_DEFERALL=1``
    like ZMailer's smtp after a connection failure: the last deferred recipient of a job
    is reported ``deferall`` (the scheduler then defers every later job of the thread).
``TESTTA_NOMARK=1``
    do not lock, mark or append to the control file (dispatch benchmarks).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scheduler.ta import libta
from scheduler.ta.libta import Job, JobContext, Outcome
from spool.controlfile import Recipient

log = logging.getLogger(__name__)

STATUSES = frozenset(
    {
        "ok",
        "ok3",
        "error",
        "deferred",
        "deferall",
        "deferback",
        "retryat",
        "crash",
        "garbage",
    }
)
_DSN = {"ok": "2.0.0", "ok3": "2.0.0", "error": "5.0.0"}


@dataclass(frozen=True, slots=True)
class Rule:
    pattern: str
    status: str


def parse_rules(text: str) -> list[Rule]:
    """Parse ``pattern=status;…``; raises ValueError on an unknown status."""
    rules: list[Rule] = []
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        pattern, sep, status = part.rpartition("=")
        if not sep:
            pattern, status = "*", part
        status = status.strip().lower()
        if status not in STATUSES:
            raise ValueError(f"TESTTA_RULES: unknown status {status!r} in {part!r}")
        rules.append(Rule(pattern.strip().lower() or "*", status))
    return rules or [Rule("*", "ok")]


def decide(rules: Sequence[Rule], address: str) -> str:
    """The status of the first rule whose pattern matches ``address`` (default ``ok``)."""
    addr = address.lower()
    for rule in rules:
        if fnmatch.fnmatchcase(addr, rule.pattern):
            return rule.status
    return "ok"


class TestAgent:
    """The scripted deliverer; every recipient of a job is handled in one batch."""

    batch = True

    def __init__(self, env: Mapping[str, str]) -> None:
        self.rules = parse_rules(env.get("TESTTA_RULES", "*=ok"))
        self.sleep = float(env.get("TESTTA_SLEEP", "0") or 0)
        self.logfile = env.get("TESTTA_LOG") or None
        self.diag = env.get("TESTTA_DIAG", "")
        self.deferall = env.get("TESTTA_DEFERALL", "") not in ("", "0")

    def begin_job(self, job: Job) -> None:
        if self.logfile:
            host = "" if job.host is None else f"\t{job.host}"
            with open(
                self.logfile, "a", encoding="utf-8", errors="surrogateescape"
            ) as f:
                f.write(f"{time.time():.6f}\t{job.spoolpath}{host}\n")

    def deliver(
        self, ctx: JobContext, recipients: Sequence[Recipient]
    ) -> list[Outcome]:
        if self.sleep > 0:
            time.sleep(self.sleep)
        outcomes = [self._one(ctx, r) for r in recipients]
        if self.deferall:
            deferred_at = [i for i, o in enumerate(outcomes) if o.status == "deferred"]
            if deferred_at:
                last = outcomes[deferred_at[-1]]
                outcomes[deferred_at[-1]] = Outcome(
                    "deferall",
                    last.dsn_status,
                    last.diagnostic,
                    remote_mta=last.remote_mta,
                )
        return outcomes

    def _one(self, ctx: JobContext, rcpt: Recipient) -> Outcome:
        status = decide(self.rules, rcpt.user)
        if status == "crash":
            log.warning("scripted crash on %s", rcpt.user)
            sys.stdout.flush()
            os._exit(3)
        if status == "garbage":
            sys.stdout.buffer.write(b"this is not a diagnostic line\n")
            sys.stdout.flush()
            status = "deferred"
        text = self.diag or f"x-testta; {_code(status)} (scripted {status})"
        dsn = _DSN.get(status, "4.0.0")
        if status == "retryat":
            return Outcome(
                status, dsn, text, message=f"+60 {text}", remote_mta=rcpt.host
            )
        return Outcome(status, dsn, text, remote_mta=rcpt.host)


def _code(status: str) -> str:
    if status.startswith("ok"):
        return "250"
    return "550" if status == "error" else "450"


def main(argv: Sequence[str] | None = None) -> int:
    libta.setup_logging("testta")
    parser = libta.common_parser("testta", "Scripted test transport agent.", "*")
    args = libta.parse_args(parser, argv)
    options = libta.options_from(args, "testta")
    options.nomark = os.environ.get("TESTTA_NOMARK", "") not in ("", "0")
    try:
        agent = TestAgent(os.environ)
    except ValueError as exc:
        log.error("%s", exc)
        return 64
    return libta.run_agent(options, agent)


if __name__ == "__main__":
    sys.exit(main())

"""The recorded main run (``zmailer-transcripts``): its control files, where they sat in
the queue and how old they were, its configs adapted to testta, and its diagnostic.

Shared by :mod:`tests.e2e.conftest` (``start_recorded_daemon``) and the e2e modules
that replay the recordings against the daemon.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

from tests.recordings import RECORDINGS

if TYPE_CHECKING:
    from tests.e2e.conftest import DaemonProc

__all__ = [
    "DIAG",
    "PLACES",
    "REF",
    "adapted_config",
    "quiet_interval",
    "recorded_files",
    "tried_once",
]

REF = RECORDINGS

DIAG = (
    "smtp; 500 (connect to 127.0.0.1 [127.0.0.1|9|127.0.0.1|48553]: Connection refused)"
)
PLACES = {
    "100001": ("Y/F/", 3 * 3600),
    "100002": ("Y/G/", 2 * 3600 + 2 * 60 + 5),
    "100003": ("Y/H/", 10 * 60),
    "100004": ("Y/I/", 90),
    "100005": ("Y/J/", 45),
}
_SMTP_CMD = re.compile(r'command="smtp [^"]*"')


def recorded_files() -> dict[str, str]:
    text = (REF / "queue-data/main-run-control-files.txt").read_text()
    parts = re.split(r"^==== transport/(\d+) ====\n", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def quiet_interval(now: float | None = None, margin: int = 3600) -> str:
    """An ``interval`` whose boundaries (multiples of it from the epoch, where ZMailer's
    reschedules land, issue 12) are more than ``margin`` seconds from ``now``: a daemon
    started now sees no second run of a deferred thread while a test module runs."""
    now = time.time() if now is None else now
    for days in (7, 6, 5, 11):
        interval = days * 86400
        if margin < now % interval < interval - margin:
            return f"{days}d"
    raise AssertionError(f"no quiet interval at {now}")  # every 2,310 days, for 2 h


def adapted_config(name: str) -> str:
    """``configs/<name>`` with testta for smtp, and the default clause's ``interval=1m``
    made days long (:func:`quiet_interval`): a fresh thread's first ``deferred`` or
    ``deferall``, and every ETRN run, reschedule it to 10 s past the next interval
    boundary (as ZMailer does, issue 12); with 1m, or 1h near the top of an hour, that
    could come while the cases run and add a try to the recorded state (every smtp
    thread tried once). Only ``W=`` and ``retry in`` (both masked) depend on it."""
    text = (REF / "configs" / name).read_text()
    text = text.replace("*/*\tinterval=1m\n", f"*/*\tinterval={quiet_interval()}\n", 1)
    # The queue-only smtp-etrn thread's first wakeup is start + r[0] seconds (S36): the
    # recorded state is after it, so r[0] = 1 instead of 12 reaches it 11 s sooner (its
    # later wakeups are masked, and a queue-only thread never runs from its wakeup).
    text = text.replace('\tretries="12"\n', '\tretries="1"\n', 1)
    text = "\n".join(
        line
        for line in text.splitlines()
        if not line.startswith(("PARAMauthfile", "PARAMmailqsock"))
    )
    return _SMTP_CMD.sub('command="builtin:testta -c $channel"', text) + "\n"


def tried_once(d: DaemonProc) -> bool:
    short, threads2 = d.query("SHOW QUEUE SHORT", "SHOW QUEUE THREADS2")
    return (
        "Kids: 2  Idle:  2" in short
        and threads2.count("\tA=1\t") == 2
        # the queueonly smtp-etrn thread's first wakeup is r[0] = 1 s away (S36)
        and "etrn.example.com\tN=1\tR=1\tA=0\tQA=" in threads2
    )

"""Issue 12 item 9: the next wakeup (``W=``) after an ETRN-started run, real vs ours.

``python -m bench.oracle_diff.etrn_wakeup [real|ours] [WAIT]``: one message to a
queue-only ``smtp-etrn/etrn.example.com`` thread (interval=1h, retries="12") and one to
an ordinary ``smtp/example.net`` thread, the agent is the real ``smtp`` TA pointed at a
closed loopback port (every attempt is deferred). Prints SHOW QUEUE THREADS2 and SHOW
THREAD before and after ``ETRN`` of each host. Needs the oracle build (``/tmp/zm``).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from bench.oracle_diff.live import prepare, start_ours, start_real
from bench.oracle_diff.runner import ZM, Mq2, _settled

SMTP = (
    os.environ.get("ETRNW_SMTP", f"{ZM}/bin/ta/smtp")
    + " -s -x -h zmtest.invalid -F [127.0.0.1] -p 9"
)
CONF = f"""\
*/*\tinterval=1m idlemax=4m expiry=5d expiry2=2d
\tretries="1 1 2 3 5 8 13 21 34" maxchannel=0 maxring=20 overfeed=150
smtp-etrn/*\tmaxchannel=199 maxring=20 interval={os.environ.get("ETRNW_INTERVAL", "1h")} retries="12" queueonly
\tcommand="{SMTP} -c $channel"
smtp/*\tmaxchannel=199 maxring=50 command="{SMTP}"
"""


def control(n: int, channel: str, host: str, age: float) -> bytes:
    body = (
        f"@ 0x00000007\ni {n}\no 100\nl <{n}.t@t>\ne a@example.com\n"
        f"s local - a@example.com 0\nr           {channel} {host} u@{host} 0\nm\n"
        f"Subject: t\n\n"
    )
    return body.encode()


def main() -> None:
    which = sys.argv[1] if len(sys.argv) > 1 else "real"
    wait = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
    root = Path(tempfile.mkdtemp(prefix=f"etrnw-{which}-"))
    now = time.time()
    files = {
        str(n): (control(n, ch, host, age), now - age)
        for n, ch, host, age in [
            (100001, "smtp", "example.net", 3 * 3600),
            (100005, "smtp-etrn", "etrn.example.com", 45),
        ]
    }
    prepare(root, files, CONF)
    d = start_real(root) if which == "real" else start_ours(root)
    try:
        _settled(d.port)
        time.sleep(wait)
        mq = Mq2(d.port)

        def show(tag: str) -> None:
            print(f"== {tag} t={time.time():.0f}")
            print(mq.ask("SHOW QUEUE THREADS2"), end="")
            for ch, host in [
                ("smtp", "example.net"),
                ("smtp-etrn", "etrn.example.com"),
            ]:
                print(mq.ask(f"SHOW THREAD {ch} {host}"), end="")

        show("before")
        for host in ("example.net", "etrn.example.com"):
            print(f"ETRN {host}:", mq.ask(f"ETRN {host}"), end="")
        show("right after")
        time.sleep(3)
        show("3 s after")
        mq.close()
    finally:
        d.stop()
    print("root", root)


if __name__ == "__main__":
    main()

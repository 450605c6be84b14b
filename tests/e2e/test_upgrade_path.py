"""The upgrade path of docs/upgrading.md, end to end against the real ZMailer 3.0.1.

A ZMailer site (zmailer.conf, postoffice, router daemon, scheduler, its own agents in
``$MAILBIN/ta``) runs with some mail queued; its scheduler is swapped for ours on the
same files and the same unchanged scheduler.conf; ZMailer's sendmail and router keep
submitting, ZMailer's agents deliver to a loopback SMTP sink and to local mbox files,
the real ``mailq`` (every mode, ``-M`` too) and the Perl ``ZMailer::mailq`` module
work against ours; then ours is stopped and ZMailer's started again on the same spool,
and nothing is lost.  Skips when ``/tmp/zm`` is absent (CI).

Run it alone: ``python -m pytest -v tests/e2e/test_upgrade_path.py``; with
``UPGRADE_TRANSCRIPT=file`` it writes what it saw (the outputs docs/upgrading.md quotes).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from spool.counterfile import read_counters
from tests.e2e import zmsite
from tests.smtpsink import ThreadedSmtpSink

pytestmark = pytest.mark.skipif(
    not zmsite.available() or os.geteuid() != 0,
    reason="needs the real ZMailer built at /tmp/zm (and root, as ZMailer runs)",
)

Modes = tuple[str, ...]
#: the real mailq's modes; -v, -i and -u print each message verbosely, where ZMailer's
#: own client crashes on a thread with a stored diagnostic (against either scheduler)
MODES: list[Modes] = [
    *((), ("-Q",), ("-QQ",), ("-QQQ",), ("-QQQQ",), ("-s",), ("-S",), ("-t",)),
    *(("-v",), ("-i",), ("-u", "root"), ("-U", "nobody/nobody"), ("-M",)),
    *(("-c", "smtp", "-h", "later.example"), ("-E", "later.example")),
]
LATER = "*@later.example"
DEFER = "451 4.3.0 try again later"


@pytest.fixture
def sink() -> Iterator[ThreadedSmtpSink]:
    with ThreadedSmtpSink({LATER: DEFER}) as s:
        yield s


@pytest.fixture
def site(sink: ThreadedSmtpSink) -> Iterator[zmsite.Site]:
    root = Path(tempfile.mkdtemp(prefix="zmsite"))
    s = zmsite.Site(root, sink.port).build()
    try:
        yield s
    finally:
        s.cleanup()
        transcript = os.environ.get("UPGRADE_TRANSCRIPT")
        if transcript:
            Path(transcript).write_text("\n".join(s.log) + "\n")
        if not os.environ.get("UPGRADE_KEEP"):
            shutil.rmtree(root, ignore_errors=True)


def delivered_to_sink(sink: ThreadedSmtpSink, rcpt: str) -> bool:
    return any(rcpt in [r for r, _ in t.rcpts] for t in sink.transactions)


def subjects(text: str) -> list[str]:
    return re.findall(r"^Subject: (.*)$", text, re.M)


def test_swap_in_and_back(site: zmsite.Site, sink: ThreadedSmtpSink) -> None:
    # 1. A running ZMailer site with mail delivered and mail waiting.
    site.start_router()
    zm_pid = site.start_zmailer()
    site.sendmail("root", "root", "user@example.net", subject="before-switch")
    site.sendmail("root", "waiting@later.example", subject="waits-across-switches")
    site.route_all()
    zmsite.wait_for(
        lambda: (
            "before-switch" in subjects(site.mbox())
            and delivered_to_sink(sink, "user@example.net")
        ),
        "ZMailer to deliver the first message",
    )
    zmsite.wait_for(
        lambda: (
            "smtp/later.example" in site.mailq("-Q").stdout.replace("\t", "/")
            or "later.example" in site.mailq("-Q").stdout
        ),
        "the deferred message in ZMailer's queue",
    )
    site.note(f"ZMailer's scheduler pid {zm_pid}, mailq -Q:\n{site.mailq('-Q').stdout}")
    against_zmailer = {args: site.mailq(*args).returncode for args in MODES}
    site.note(f"real mailq exit codes against ZMailer: {against_zmailer}")

    # 2. Switch: stop ZMailer's scheduler only; the router keeps running.
    site.stop_zmailer()
    waiting = site.control_files()
    assert len(waiting) == 1, waiting
    # mail arriving while no scheduler runs waits in transport/
    site.sendmail("root", "root", "user2@example.net", subject="during-switch")
    site.sendmail("root", "nosuchuser", subject="to-be-bounced")
    site.route_all()
    hold = _hold_one(site)

    # 3. Ours on the same files, the site's scheduler.conf unchanged.
    site.start_ours()
    zmsite.wait_for(
        lambda: (
            delivered_to_sink(sink, "user2@example.net")
            and {"during-switch", hold} <= set(subjects(site.mbox()))
            and any("to-be-bounced" in s for s in subjects(site.mbox()))
        ),
        "the site's agents (smtp, mailbox, errormail, hold) under our scheduler",
    )
    site.sendmail("root", "root", subject="after-switch")
    zmsite.wait_for(lambda: "after-switch" in subjects(site.mbox()), "a new message")
    site.note("root's mbox subjects under ours: " + repr(subjects(site.mbox())))
    _real_clients_work(site, against_zmailer)
    # everything but the waiting message is done (bounces and releases go through the
    # router first, so under load they may still be in flight a moment longer)
    zmsite.wait_for(
        lambda: [p.name for p in site.control_files()] == [p.name for p in waiting],
        "ours to finish every message except the one that waits",
    )
    assert site.stop_ours() == 0
    assert not (site.po / ".pid.scheduler").exists()
    assert [p.name for p in site.control_files()] == [p.name for p in waiting]
    assert "Traceback" not in site.ours_log()

    # 4. Back: ZMailer's scheduler on the same spool; the waiting message goes out.
    sink.sink.rules.clear()
    site.start_zmailer()
    zmsite.wait_for(
        lambda: delivered_to_sink(sink, "waiting@later.example"),
        "ZMailer to deliver the message that waited through both switches",
    )
    zmsite.wait_for(lambda: not site.control_files(), "an empty transport/")
    with read_counters(str(site.counter_file)) as block:
        starts = block.get("SYS.SchedulerMasterStarts")
        assert starts == 3, starts  # ZMailer, ours, ZMailer: one file all along
    site.stop_zmailer()
    site.stop_router()
    assert not list((site.po / "freezer").iterdir())
    assert not list((site.po / "deferred").iterdir())


def _hold_one(site: zmsite.Site) -> str:
    """A recipient on the hold channel with a ``timeout:`` condition that has passed.

    The router writes hold lines only when a lookup is deferred (DNS down and the like),
    which cannot happen on loopback with the shipped router.cf, so one routed control
    file's recipient is given the hold channel while no scheduler runs.
    """
    site.sendmail("root", "root", subject="held-then-released")
    site.route_all()
    for ctl in site.control_files():
        text = ctl.read_text()
        if "held-then-released" in text:
            past = int(time.time()) - 60
            ctl.write_text(
                re.sub(
                    r"^r( +)local root ",
                    rf"r\1hold timeout:{past} ",
                    text,
                    count=1,
                    flags=re.M,
                )
            )
            site.note(
                "hold line: "
                + next(x for x in ctl.read_text().split("\n") if x.startswith("r"))
            )
            return "held-then-released"
    raise AssertionError("the held message was not routed")


def _real_clients_work(site: zmsite.Site, against_zmailer: dict[Modes, int]) -> None:
    """Every mode of the real mailq exits as it does against ZMailer (0, except where
    ZMailer's own client crashes on a stored diagnostic), and the Perl module works."""
    for args in MODES:
        done = site.mailq(*args)
        site.note(f"$ mailq {' '.join(args)}  (exit {done.returncode})\n{done.stdout}")
        assert done.returncode == against_zmailer[args], (args, done.stderr)
        if done.returncode == 0:
            assert done.stdout, args
    assert "later.example" in site.mailq("-Q").stdout
    assert re.search(r"^SYS\.SchedulerMasterStarts +2$", site.mailq("-M").stdout, re.M)
    assert "Magic=0x33120006" in site.mailq("-QQQQ").stdout
    perl = site.perl_mailq("SHOW SNMP", "SHOW QUEUE THREADS", "SHOW COUNTERS")
    site.note(
        f"Perl ZMailer::mailq (exit {perl.returncode}):\n{perl.stdout}{perl.stderr}"
    )
    assert perl.returncode == 0, perl.stderr
    assert perl.stdout.startswith("login +\n")
    assert "== SHOW SNMP + " in perl.stdout
    assert "bye +" in perl.stdout

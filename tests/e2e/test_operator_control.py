"""Operator control end to end: the real daemon, the real smtp agent, a loopback sink.

Hold a message and see it stay while the sink receives others, release it and see it
delivered; the same for a suspended destination; previews count what is then acted on;
a delete is undone and the message delivered; holds survive a restart.
"""

from __future__ import annotations

import re
import subprocess
import sys

from tests.e2e.conftest import DaemonFactory, DaemonProc, files_gone, wait_until
from tests.smtpsink import ThreadedSmtpSink

CONF = """\
*/*\tinterval=1 idlemax=30s expiry=5d retries="1 1 1 1 1" skew=1
\tmaxchannel=0 maxring=20 overfeed=10

smtp/*\tcommand="builtin:smtp -h e2e.test -F [127.0.0.1] -p {port}"
"""


def _delivered(sink: ThreadedSmtpSink, rcpt: str) -> bool:
    return any(rcpt in [r[0] for r in t.rcpts] for t in sink.transactions)


def _loaded(d: DaemonProc, relpath: str) -> bool:
    (body,) = d.query("SHOW MSGS")
    return any(line.split("\t")[1] == relpath for line in body.splitlines())


def _state(d: DaemonProc, relpath: str) -> str:
    (body,) = d.query(f"SHOW MSG {relpath}")
    fields = dict(line.split("\t", 1) for line in body.splitlines() if "\t" in line)
    return fields.get("state:", "")


def test_hold_keeps_a_message_until_release(daemon_factory: DaemonFactory) -> None:
    with ThreadedSmtpSink({}) as sink:
        d = daemon_factory(CONF.format(port=sink.port))
        (reply,) = d.query("SUSPEND smtp/*.example FOR 1h incident 42")
        assert reply.startswith("+OK op=")
        assert "rule=" in reply
        rule = re.search(r"rule=(\S+)", reply)
        assert rule is not None
        held = d.submit("a@hold.example")
        wait_until(lambda: _loaded(d, held), what="the message to load")
        (reply,) = d.query(f"HOLD {held} waiting for legal")
        assert reply.startswith("+OK op=")
        assert "held 1 messages (1 recipients)" in reply
        (reply,) = d.query(f"RESUME {rule.group(1)}")
        assert reply.startswith("+OK op=")

        other = d.submit("b@hold.example")
        wait_until(lambda: files_gone(d.po, other), what="the other message")
        assert _delivered(sink, "b@hold.example")
        assert not _delivered(sink, "a@hold.example")
        assert _state(d, held) == "held"
        listing = subprocess.run(
            [sys.executable, "-m", "spool", "list", "-P", str(d.po.root)],
            capture_output=True,
            check=True,
            env=d.env,
        ).stdout.decode()
        assert "held" in listing

        (reply,) = d.query(f"RELEASE {held}")
        assert "released 1 messages" in reply
        wait_until(lambda: files_gone(d.po, held), what="delivery after release")
        assert _delivered(sink, "a@hold.example")


def test_suspend_keeps_a_destination_until_resume(
    daemon_factory: DaemonFactory,
) -> None:
    with ThreadedSmtpSink({}) as sink:
        d = daemon_factory(CONF.format(port=sink.port))
        (reply,) = d.query("SUSPEND smtp/sus.example remote asked us to wait")
        rule = re.search(r"rule=(\S+)", reply)
        assert rule is not None
        (suspends,) = d.query("SHOW SUSPENDS")
        assert suspends.split("\t")[:2] == [rule.group(1), "smtp/sus.example"]
        sus = d.submit("x@sus.example")
        ok = d.submit("y@ok.example")
        wait_until(lambda: files_gone(d.po, ok), what="the unsuspended destination")
        assert not _delivered(sink, "x@sus.example")
        (thread,) = d.query("SHOW QUEUE THREADS")
        assert "pend=Suspended:remote_asked_us_to_wait" in thread
        (explain,) = d.query("EXPLAIN THREAD smtp sus.example")
        assert "suspended by a rule" in explain
        d.query(f"RESUME {rule.group(1)}")
        wait_until(lambda: files_gone(d.po, sus), what="delivery after resume")
        assert _delivered(sink, "x@sus.example")


def test_preview_counts_are_the_counts_acted_on(daemon_factory: DaemonFactory) -> None:
    with ThreadedSmtpSink({}) as sink:
        d = daemon_factory(CONF.format(port=sink.port))
        d.query("SUSPEND smtp/*")
        paths = [
            d.submit(f"u{i}@p{i % 2}.example", f"v{i}@q.example") for i in range(4)
        ]
        wait_until(lambda: all(_loaded(d, p) for p in paths), what="loading")
        (bad,) = d.query("HOLD WHERE host=p0.example ag<2x")
        assert bad.startswith("-bad filter term 2 'ag<2x'")
        (preview,) = d.query("HOLD WHERE host=p0.example")
        m = re.search(
            r"preview: (\d+) messages, (\d+) recipients;.*CONFIRM (\S+)", preview
        )
        assert m is not None
        assert preview.startswith("+OK")
        assert (m.group(1), m.group(2)) == ("2", "4")
        (wrong,) = d.query(f"HOLD WHERE host=p1.example CONFIRM {m.group(3)}")
        assert wrong.startswith("-CONFIRM")
        (acted,) = d.query(f"HOLD WHERE host=p0.example CONFIRM {m.group(3)}")
        assert re.search(r"op=\S+ held 2 messages \(4 recipients\)", acted)
        (again,) = d.query(f"HOLD WHERE host=p0.example CONFIRM {m.group(3)}")
        assert again.startswith("-CONFIRM")
        (held,) = d.query("SHOW MSGS WHERE state=held")
        assert len(held.splitlines()) == 2
        (ops,) = d.query("SHOW OPS")
        assert "HOLD WHERE host=p0.example" in ops
        assert sink.transactions == []


def test_undo_a_delete_and_the_message_is_delivered(
    daemon_factory: DaemonFactory,
) -> None:
    with ThreadedSmtpSink({}) as sink:
        d = daemon_factory(CONF.format(port=sink.port))
        (reply,) = d.query("SUSPEND smtp/*")
        rule = re.search(r"rule=(\S+)", reply)
        assert rule is not None
        path = d.submit("z@undo.example")
        wait_until(lambda: _loaded(d, path), what="loading")
        (reply,) = d.query(f"DELETE {path}")
        op = re.search(r"op=(\S+) deleted \(into the trash\) 1 messages", reply)
        assert op is not None, reply
        assert files_gone(d.po, path)
        assert not _loaded(d, path)
        d.query(f"RESUME {rule.group(1)}")
        (reply,) = d.query(f"UNDO {op.group(1)}")
        assert reply.startswith("+OK op=")
        assert "1 messages" in reply
        wait_until(
            lambda: _delivered(sink, "z@undo.example"), what="delivery after UNDO"
        )


def test_holds_and_rules_survive_a_restart(daemon_factory: DaemonFactory) -> None:
    with ThreadedSmtpSink({}) as sink:
        d = daemon_factory(CONF.format(port=sink.port))
        d.query("SUSPEND smtp/*")
        path = d.submit("r@restart.example")
        wait_until(lambda: _loaded(d, path), what="loading")
        d.query(f"HOLD {path}")
        d.stop()
        d.start()
        wait_until(lambda: _loaded(d, path), what="reloading")
        assert _state(d, path) == "held"
        (suspends,) = d.query("SHOW SUSPENDS")
        (rule_id,) = [line.split("\t")[0] for line in suspends.splitlines()]
        d.query(f"RESUME {rule_id}")
        (reply,) = d.query(f"RELEASE {path}")
        assert "released 1" in reply
        wait_until(lambda: files_gone(d.po, path), what="delivery after restart")
        assert _delivered(sink, "r@restart.example")

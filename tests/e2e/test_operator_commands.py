"""Every operator command over a raw socket against the real daemon (no delivery: the
destinations are suspended or the channel is queue-only)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time

from mailq.protocol.auth import authenticator
from spool.submit import submit
from tests.e2e.conftest import ADMIN, ADMIN_PW, DaemonFactory, DaemonProc, wait_until

CONF = """\
*/*\tinterval=1s idlemax=30s expiry=5d retries="60 60"
\tmaxchannel=0 maxring=20 overfeed=10

smtp/*\tqueueonly command="builtin:smtp -h e2e.test"
"""


def _loaded(d: DaemonProc, *relpaths: str) -> bool:
    (body,) = d.query("SHOW MSGS")
    have = {line.split("\t")[1] for line in body.splitlines()}
    return all(p in have for p in relpaths)


def _raw(d: DaemonProc, user: str, password: str, *commands: str) -> list[bytes]:
    """Each reply's raw bytes (status line, or the whole body with its terminator)."""
    with socket.create_connection(d.address, timeout=20) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        challenge = reader.readline().decode().rstrip("\n")
        sock.sendall(f"AUTH {user} {authenticator(challenge, password)}\n".encode())
        assert reader.readline() == b"+OK\n"
        out = []
        for command in commands:
            sock.sendall(command.encode() + b"\n")
            first = reader.readline()
            if first == b"+OK until LF.LF\n":
                while (line := reader.readline()) not in (b".\n", b""):
                    first += line
                first += b".\n"
            elif (
                command.startswith("KILL ") and first != b"-No KILL allowed for you.\n"
            ):
                first += reader.readline()  # the KILL replies' extra empty line (B2)
            out.append(first)
        sock.sendall(b"QUIT\n")
    return out


def _daemon(daemon_factory: DaemonFactory) -> DaemonProc:
    d = daemon_factory(CONF)
    d.auth.write_text(
        f"{ADMIN}:{ADMIN_PW}:ALL:[127.0.0.0]/8\n"
        "nobody:nopw:QQ TT:[127.0.0.0]/8\n"
        "reader:rdpw:QQ TT MSGS:[127.0.0.0]/8\n"
        "killer:klpw:KILL:[127.0.0.0]/8\n"
    )
    return d


def test_show_msg_takes_every_id_form(daemon_factory: DaemonFactory) -> None:
    d = _daemon(daemon_factory)
    path = d.submit("alice@a.example", "bob@b.example")
    wait_until(lambda: _loaded(d, path), what="loading")
    (body,) = d.query(f"SHOW MSG {path}")
    fields = dict(line.split("\t", 1) for line in body.splitlines())
    sid = fields["spool-id:"]
    assert fields["file:"] == path
    assert fields["sender:"] == "sender@example.com"
    assert fields["state:"] == "queued"
    rcpts = [line for line in body.splitlines() if line.startswith("rcpt:")]
    assert [r.split("\t")[1:5] for r in rcpts] == [
        ["smtp", "a.example", "alice@a.example", "queued"],
        ["smtp", "b.example", "bob@b.example", "queued"],
    ]
    number = path.rpartition("/")[2]
    msgid = fields["message-id:"]
    assert msgid.startswith("<")
    for ident in (sid, number, "transport/" + path, msgid):
        (again,) = d.query(f"SHOW MSG {ident}")
        assert again == body
    (missing,) = d.query("SHOW MSG S1AbmLFR1q")
    assert missing == "-No such message.\n"


def test_kill_msg_takes_the_path_mailq_prints(daemon_factory: DaemonFactory) -> None:
    d = _daemon(daemon_factory)
    one = d.submit("x@k.example")
    wait_until(lambda: _loaded(d, one), what="loading")
    (sid_line,) = d.query(f"SHOW MSG {one}")
    sid = sid_line.split("\n")[0].split("\t")[1]
    assert _raw(d, ADMIN, ADMIN_PW, f"KILL MSG {one}") == [
        b"+OK; KILLed something.\n\n"
    ]
    two = d.submit("y@k.example")
    wait_until(lambda: _loaded(d, two), what="loading")
    (line,) = d.query(f"SHOW MSG {two}")
    sid = line.split("\n")[0].split("\t")[1]
    # the old form keeps its exact reply
    assert _raw(d, ADMIN, ADMIN_PW, f"KILL MSG {sid}") == [
        b"+OK; KILLed something.\n\n"
    ]
    assert _raw(d, ADMIN, ADMIN_PW, "KILL MSG S1AbmLFR1q") == [b"-No such message.\n\n"]


def test_rights_nobody_sees_no_addresses(daemon_factory: DaemonFactory) -> None:
    d = _daemon(daemon_factory)
    path = d.submit("secret@s.example")
    wait_until(lambda: _loaded(d, path), what="loading")
    denied = _raw(d, "nobody", "nopw", "SHOW MSGS", f"SHOW MSG {path}", f"HOLD {path}")
    assert denied == [
        b"-MAILQ2 Unknown command, or refused by access control; VERB='SHOW' REST='MSGS'\n",
        b"-MAILQ2 Unknown command, or refused by access control; VERB='SHOW' REST='MSG'\n",
        b"-MAILQ2 Unknown command, or refused by access control; VERB='HOLD' REST='"
        + path.encode()
        + b"'\n",
    ]
    (shape,) = _raw(d, "nobody", "nopw", "SHOW QUEUE SHAPE BY domain")
    assert b"secret" not in shape
    assert b"s.example" in shape
    (msgs, hold) = _raw(d, "reader", "rdpw", "SHOW MSGS", f"HOLD {path}")
    assert b"secret@s.example" not in msgs  # rows carry the sender, not recipients
    assert path.encode() in msgs
    assert hold.startswith(b"-MAILQ2 Unknown command")
    (kill,) = _raw(d, "killer", "klpw", "SHOW MSGS")
    assert kill.startswith(b"-MAILQ2 Unknown command")


def test_kill_thread_previews_then_acts(daemon_factory: DaemonFactory) -> None:
    d = _daemon(daemon_factory)
    paths = [d.submit(f"u{i}@kt.example") for i in range(3)]
    wait_until(lambda: _loaded(d, *paths), what="loading")
    # the old form: ZMailer's answer, and nothing deleted
    assert _raw(d, ADMIN, ADMIN_PW, "KILL THREAD smtp kt.example") == [
        b"-Unknown request.\n\n"
    ]
    assert _loaded(d, *paths)
    (preview,) = _raw(d, ADMIN, ADMIN_PW, "KILL THREAD smtp kt.example CONFIRM")
    assert preview.startswith(b"-Not done: preview: 3 messages, 3 recipients;")
    assert preview.endswith(b"\n\n")
    assert _loaded(d, *paths)
    token = re.search(rb"CONFIRM (\S+)", preview)
    assert token is not None
    command = f"KILL THREAD smtp kt.example CONFIRM {token.group(1).decode()}"
    (acted,) = _raw(d, ADMIN, ADMIN_PW, command)
    assert acted.startswith(b"+OK; KILLed something. op=")
    wait_until(lambda: d.query("SHOW MSGS") == [""], what="the thread to go")
    assert _raw(d, ADMIN, ADMIN_PW, "KILL THREAD smtp kt.example CONFIRM") == [
        b"-No such thread.\n\n"
    ]


def test_retry_at_bounce_policy_shape_explain(daemon_factory: DaemonFactory) -> None:
    d = _daemon(daemon_factory)
    path = d.submit("r@retry.example")
    wait_until(lambda: _loaded(d, path), what="loading")
    at = int(time.time()) + 3600
    (reply,) = d.query(f"RETRY {path} AT {at}")
    assert reply.startswith("+OK op=")
    assert f"at {at}" in reply
    (bad,) = d.query(f"RETRY {path} AT tomorrowish")
    assert bad.startswith("-bad time")
    (explain,) = d.query(f"EXPLAIN MSG {path}")
    assert "destination:\tsmtp/retry.example\tqueued" in explain
    assert "clause:\tsmtp/*\t" in explain

    (pol,) = d.query("POLICY SET smtp/*.example maxthr=2 rate=10/1m FOR 1h")
    m = re.search(r"rule=(\S+)", pol)
    assert m is not None
    (pols,) = d.query("SHOW POLICIES")
    assert pols.startswith(m.group(1) + "\tsmtp/*.example\t")
    assert "maxthr=2 rate=10/60s" in pols
    (gone,) = d.query(f"POLICY DELETE {m.group(1)}")
    assert gone.startswith("+OK op=")
    assert d.query("SHOW POLICIES") == [""]

    (shape,) = d.query("SHOW QUEUE SHAPE BY host TOP 5")
    lines = shape.splitlines()
    assert lines[0].split("\t")[:3] == ["", "T", "5"]
    assert lines[1].startswith("TOTAL\t1\t1")
    assert lines[2].startswith("retry.example\t1\t1")
    (bad_shape,) = d.query("SHOW QUEUE SHAPE BY color")
    assert bad_shape.startswith("-SHOW QUEUE SHAPE BY")

    (bounce,) = d.query(f"BOUNCE {path} cancelled in the incident")
    assert re.match(r"\+OK op=\S+ bounced 1 messages \(1 recipients\)", bounce)
    control = (
        d.po.control_path(path).read_bytes()
        if d.po.control_path(path).exists()
        else b""
    )
    # the recipient is marked failed (the DSN pass then completes the message)
    assert control == b"" or b"cancelled in the incident" in control


def test_undo_hold_and_show_ops(daemon_factory: DaemonFactory) -> None:
    d = _daemon(daemon_factory)
    path = d.submit("h@undo.example")
    wait_until(lambda: _loaded(d, path), what="loading")
    (reply,) = d.query(f"HOLD {path} why not")
    op = re.search(r"op=(\S+)", reply)
    assert op is not None
    (ops,) = d.query("SHOW OPS")
    row = ops.splitlines()[-1].split("\t")
    assert row[0] == op.group(1)
    assert row[2] == ADMIN
    assert row[4] == f"HOLD {path} why not"
    assert row[5:7] == ["1", "1"]
    (undo,) = d.query(f"UNDO {op.group(1)}")
    assert undo.startswith("+OK op=")
    (body,) = d.query(f"SHOW MSG {path}")
    assert "state:\tqueued" in body
    (twice,) = d.query(f"UNDO {op.group(1)}")
    assert twice.startswith("-Operation")
    (unknown,) = d.query("UNDO O1-1")
    assert unknown.startswith("-No such operation")


def test_show_msgs_by_recipient_before_and_after_a_restart(
    daemon_factory: DaemonFactory,
) -> None:
    """``rcpt=`` with a literal local part or domain takes its candidates from the
    recipient index's keys, other globs and ``rcpt~`` from the addresses it keeps (new
    arrivals and messages loaded at startup alike), ``rcpt!=`` reads every file; the
    control file decides (a recipient delivered since still has its index entry)."""
    d = _daemon(daemon_factory)
    ann = d.submit("Ann@A.example", "bob@b.example")
    bob = d.submit("bob@b.example")
    root = d.submit("carol@c.example")
    wait_until(lambda: _loaded(d, ann, bob, root), what="loading")

    def paths(flt: str) -> list[str]:
        (body,) = d.query(f"SHOW MSGS WHERE {flt}")
        return sorted(line.split("\t")[1] for line in body.splitlines() if line)

    def check() -> None:
        assert paths("rcpt=ann@*") == [ann]
        assert paths("rcpt=BOB@*") == sorted([ann, bob])
        assert paths("rcpt=*@b.example") == sorted([ann, bob])
        assert paths("rcpt=*@c.EXAMPLE channel=smtp") == [root]
        assert paths("rcpt=nobody@*") == []
        assert paths("rcpt=*o*@*") == sorted([bob, ann, root])
        assert paths("rcpt=*nn@a.example") == [ann]
        assert paths("rcpt=*NN*") == [ann]
        assert paths("rcpt~AROL@C") == [root]
        assert paths("rcpt=*@[bc]?example") == sorted([ann, bob, root])
        assert paths("rcpt=*b@*") == sorted([ann, bob])
        assert paths("rcpt!=*@b.example") == sorted([ann, root])  # every file read

    check()
    d.stop()
    d.start()
    wait_until(lambda: _loaded(d, ann, bob, root), what="loading again")
    check()
    # bob's recipient delivered behind the daemon's back: its entry stays, the file
    # says no (as after a delivery whose file the daemon has not dropped yet)
    path = d.po.control_path(bob)
    path.write_bytes(path.read_bytes().replace(b"\nr ", b"\nr+", 1))
    assert paths("rcpt=*b@*") == [ann]
    assert paths("rcpt~bob") == [ann]


def test_show_ops_and_undo_survive_a_restart(daemon_factory: DaemonFactory) -> None:
    """The operation log lives in the postoffice: after a restart SHOW OPS lists the
    same operations, UNDO of a HOLD and of a bulk RELEASE still works, an undone
    operation stays undone, and new operation ids never repeat old ones."""
    d = _daemon(daemon_factory)
    one = d.submit("a@ops.example")
    two = d.submit("b@ops.example")
    wait_until(lambda: _loaded(d, one, two), what="loading")

    def op_of(reply: str) -> str:
        m = re.search(r"op=(\S+)", reply)
        assert m is not None, reply
        return m.group(1)

    def confirmed(command: str) -> str:
        (preview,) = d.query(command)
        token = re.search(r"CONFIRM (\S+)", preview)
        assert token is not None, preview
        (reply,) = d.query(f"{command} CONFIRM {token.group(1)}")
        return reply

    hold1 = op_of(d.query(f"HOLD {one} legal")[0])
    hold_both = op_of(confirmed("HOLD WHERE host=ops.example"))
    release = op_of(confirmed("RELEASE WHERE host=ops.example"))
    undone = op_of(d.query(f"HOLD {two}")[0])
    assert d.query(f"UNDO {undone}")[0].startswith("+OK")
    (before,) = d.query("SHOW OPS")
    d.stop()
    d.start()
    wait_until(lambda: _loaded(d, one, two), what="loading again")
    (after,) = d.query("SHOW OPS")
    assert after == before
    rows = {line.split("\t")[0]: line.split("\t") for line in after.splitlines()}
    assert [hold1, hold_both, release, undone] == list(rows)[:4]
    assert rows[undone][7] == "undone"
    assert d.query(f"UNDO {undone}")[0].startswith("-Operation")
    # UNDO of the bulk RELEASE holds both again, from the kept spool-ids
    redo = d.query(f"UNDO {release}")[0]
    assert redo.startswith("+OK op=")
    assert ": 2 messages" in redo
    assert op_of(redo) not in rows
    for path in (one, two):
        assert "state:\theld" in d.query(f"SHOW MSG {path}")[0]


def test_held_mail_shows_in_mailq_and_its_reports(
    daemon_factory: DaemonFactory,
) -> None:
    """A held destination is listed by SHOW QUEUE THREADS2 with ``pend=Held`` and its
    SHOW THREAD rows are in state ``held`` with who held it and why in the diagnostic,
    so ``mailq`` and ``mailq -v`` list held mail; after RELEASE they list the same
    destinations and messages as before the hold, none held."""
    d = _daemon(daemon_factory)
    path = d.submit("h@held.example")
    other = d.submit("o@held.example", "x@free.example")
    wait_until(lambda: _loaded(d, path, other), what="loading")

    def reports() -> tuple[str, str]:
        threads2, detail = d.query(
            "SHOW QUEUE THREADS2", "SHOW THREAD smtp held.example"
        )
        return re.sub(r"QA=\d+s", "QA=*", threads2), detail

    def mailq(*args: str) -> str:
        argv = [sys.executable, "-m", "mailq", "-p", str(d.address[1])]
        argv += ["-U", f"{ADMIN}/{ADMIN_PW}", *args, d.address[0]]
        return subprocess.run(argv, capture_output=True, check=True, text=True).stdout

    before = reports()
    before_mailq = mailq()
    (reply,) = d.query(f"HOLD {path} legal hold")
    op = re.search(r"op=(\S+)", reply)
    assert op is not None
    threads2, detail = reports()
    held_line = "smtp\theld.example\tN=1\tR=1\tA=0\tpend=Held\tQA=*"
    assert held_line in threads2.splitlines()
    rows = [r.split("\t") for r in detail.splitlines() if not r.startswith("#")]
    held_rows = [r for r in rows if r[0] == path]
    assert [r[8] for r in held_rows] == ["held"]
    assert held_rows[0][9] == f"held by {op.group(1)}: legal hold"
    assert [r[8] for r in rows if r[0] == other] != ["held"]
    assert f"{path}: (0 tries, expires in" in mailq()
    assert f"held by {op.group(1)}: legal hold" in mailq()
    assert f"diag\theld by {op.group(1)}: legal hold" in mailq("-v")
    # only held mail for a destination: its own '#' line
    (reply,) = d.query(f"HOLD {other}")
    (alone,) = d.query("SHOW THREAD smtp held.example")
    assert alone.startswith("#smtp/held.example/")
    assert "pend=Held" in alone.splitlines()[0]
    d.query(f"RELEASE {path}", f"RELEASE {other}")

    def pairs(threads2: str) -> list[tuple[str, ...]]:
        return sorted(tuple(line.split("\t")[:2]) for line in threads2.splitlines())

    # released: the same destinations as before, none of them held (a thread that a
    # hold emptied is made again, so its place in the ring and its W= may differ)
    after = reports()[0]
    assert "pend=Held" not in after
    assert pairs(after) == pairs(before[0])
    expires = re.compile(r"expires in [^)]*")
    assert sorted(expires.sub("", mailq()).splitlines()) == sorted(
        expires.sub("", before_mailq).splitlines()
    )


def test_the_first_shape_after_start_counts_the_queue_it_loaded(
    daemon_factory: DaemonFactory,
) -> None:
    """The histograms are kept from the load on: the first SHOW QUEUE SHAPE after a
    start (no earlier SHAPE filled anything) shows every recipient in its age column."""
    d = daemon_factory(CONF, start=False)
    d.auth.write_text(f"{ADMIN}:{ADMIN_PW}:ALL:[127.0.0.0]/8\n")
    now = int(time.time())
    queue = [  # (age in seconds, recipients)
        (120, ["u1@a.example", "u2@a.example"]),
        (1800, ["v@b.example"]),
        (3 * 3600, ["w@c.example"]),
        (2 * 86400, ["x@a.example"]),
    ]
    paths = []
    for age, rcpts in queue:
        path = submit(d.po, "s@example.com", rcpts, b"Subject: q\n\nb\n", notify=False)
        when = (now - age) * 1_000_000_000
        os.utime(d.po.message_path(path), ns=(when, when))
        paths.append(path)
    d.start()
    wait_until(lambda: _loaded(d, *paths), what="loading")
    (shape,) = d.query("SHOW QUEUE SHAPE BY host")
    header, *rows = (line.split("\t") for line in shape.splitlines())
    columns = ["5", "10", "20", "40", "80", "160", "320", "640", "1280", "1280+"]
    assert header == ["", "T", *columns]

    def row(name: str, counts: dict[str, int]) -> list[str]:
        cells = [str(counts.get(c, 0)) for c in columns]
        return [name, str(sum(counts.values())), *cells]

    total = row("TOTAL", {"5": 2, "40": 1, "320": 1, "1280+": 1})
    a_row = row("a.example", {"5": 2, "1280+": 1})
    assert rows == [
        total,
        a_row,
        row("b.example", {"40": 1}),
        row("c.example", {"320": 1}),
    ]
    (by_domain,) = d.query("SHOW QUEUE SHAPE BY domain TOP 1")
    assert by_domain.splitlines()[1:] == ["\t".join(total), "\t".join(a_row)]

"""Local delivery: mbox and Maildir byte for byte, locking, full disks, pipes and files."""

from __future__ import annotations

import errno
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from scheduler.ta import mailstores
from scheduler.ta.mailbox import _write_failure, folder_name
from scheduler.ta.privileged import PrivilegeRefused, identity_for
from spool.layout import Postoffice
from spool.submit import submit
from tests.scheduler.ta.conftest import MESSAGE, run_ta, statuses

BODY_WITH_FROM = MESSAGE.replace(b"Bye.\n", b"From here on\n>From there\nBye.\n")
ROOT_NAME = pwd.getpwuid(0).pw_name


def _local(
    po: Postoffice, *users: str, message: bytes = MESSAGE, priv: str = ""
) -> str:
    rcpts = [("local", u, u) for u in users]
    rel = submit(po, "alice@example.com", rcpts, message)
    if priv:  # set the privilege field (the r line's fourth word)
        path = po.control_path(rel)
        path.write_bytes(path.read_bytes().replace(b" 0\n", f" {priv}\n".encode()))
    return rel


def _delivered(user: str, message: bytes) -> bytes:
    head, _, body = message.partition(b"\n\n")
    return (
        b"Return-Path: <alice@example.com>\nDelivered-To: "
        + user.encode()
        + b"\n"
        + head
        + b"\n\n"
        + body
    )


def _check_from_line(line: bytes) -> None:
    assert line.startswith(b"From alice@example.com ")
    time.strptime(line[23:].decode(), "%a %b %d %H:%M:%S %Y")


def test_mbox_appended_byte_for_byte(po: Postoffice, tmp_path: Path) -> None:
    root = tmp_path / "mail"
    root.mkdir()
    old = b"From x@y Thu Jan  1 00:00:00 1970\nSubject: old\n\nold body\n"
    (root / "dave").write_bytes(old)  # no empty line at its end: one is added
    rel = _local(po, "dave", message=BODY_WITH_FROM)
    res = run_ta("mailbox", po, [f"{rel}\tdave"], "-d", str(root))
    assert [r[2] for r in res.reports] == ["ok"], res.stderr
    data = (root / "dave").read_bytes()
    assert data.startswith(old + b"\n")
    from_line, _, rest = data[len(old) + 1 :].partition(b"\n")
    _check_from_line(from_line)
    expected = _delivered("dave", BODY_WITH_FROM).replace(
        b"\nFrom here", b"\n>From here"
    )
    assert rest == expected + b"\n"
    assert not (root / "dave.lock").exists()
    assert statuses(po, rel) == {"dave": "+"}


def test_maildir_kept_for_a_user_who_has_one(po: Postoffice, tmp_path: Path) -> None:
    root = tmp_path / "mail"
    for sub in ("tmp", "new", "cur"):
        (root / "erin" / sub).mkdir(parents=True)
    rel = _local(po, "erin")
    res = run_ta("mailbox", po, [f"{rel}\terin"], "-d", str(root), "--format", "mbox")
    assert [r[2] for r in res.reports] == ["ok"], res.stderr
    [path] = (root / "erin" / "new").iterdir()
    assert path.read_bytes() == _delivered("erin", MESSAGE)


def test_new_system_user_gets_the_sites_form(po: Postoffice, tmp_path: Path) -> None:
    for form in ("mbox", "maildir"):
        root = tmp_path / form
        root.mkdir()
        rel = _local(po, ROOT_NAME)
        res = run_ta(
            "mailbox", po, [f"{rel}\t{ROOT_NAME}"], "-d", str(root), "--format", form
        )
        assert [r[2] for r in res.reports] == ["ok"], res.stderr
        box = root / ROOT_NAME
        assert box.is_file() if form == "mbox" else (box / "new").is_dir()


def test_busy_dot_lock_defers_and_stale_one_is_taken(
    po: Postoffice, tmp_path: Path
) -> None:
    root = tmp_path / "mail"
    root.mkdir()
    (root / "fred").write_bytes(b"")
    lock = root / "fred.lock"
    lock.write_text("12345\n")
    rel = _local(po, "fred")
    res = run_ta("mailbox", po, [f"{rel}\tfred"], "-d", str(root))
    [rep] = res.reports
    assert rep[2] == "deferred"
    assert "busy" in rep[3]
    assert (root / "fred").read_bytes() == b""
    old = time.time() - 3600
    os.utime(lock, (old, old))
    res = run_ta("mailbox", po, [f"{rel}\tfred"], "-d", str(root))
    assert [r[2] for r in res.reports] == ["ok"]
    assert (root / "fred").read_bytes().startswith(b"From alice@example.com ")


def test_full_disk_truncates_back_and_defers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = tmp_path / "box"
    box.write_bytes(b"From a b\n\nold\n\n")
    real_write = os.write

    def short_write(fd: int, data: bytes | memoryview) -> int:
        real_write(fd, bytes(data[:10]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", short_write)
    with pytest.raises(OSError, match="No space") as info:
        mailstores.write_mbox(
            str(box), mailstores.mbox_bytes("a@b", b"S: x\n\nbody\n"), dot=False
        )
    monkeypatch.undo()
    assert box.read_bytes() == b"From a b\n\nold\n\n"
    outcome = _write_failure(info.value, str(box), "host")
    assert (outcome.status, outcome.dsn_status) == ("deferred", "4.3.1")
    quota = _write_failure(OSError(errno.EDQUOT, "Disk quota exceeded"), "x", "h")
    assert (quota.status, quota.dsn_status) == ("deferred", "4.2.2")


def test_mbox_quoting_and_names() -> None:
    assert (
        mailstores.quote_from(b"From a\nxFrom b\nFrom c\n")
        == b">From a\nxFrom b\n>From c\n"
    )
    assert folder_name('"bob"') == "bob"
    assert folder_name("\\bob+box@host") == "bob"


def test_program_and_file_need_root_and_a_real_privilege() -> None:
    with pytest.raises(PrivilegeRefused, match="root"):
        identity_for("1", is_root=False, what="program")
    with pytest.raises(PrivilegeRefused, match="privileges"):
        identity_for(str(pwd.getpwnam("nobody").pw_uid), is_root=True, what="file")
    with pytest.raises(PrivilegeRefused, match="non-numeric"):
        identity_for("x", is_root=True, what="file")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to take a user's identity")
def test_pipe_and_file_run_with_the_recipients_uid(
    po: Postoffice, tmp_path: Path
) -> None:
    user = pwd.getpwnam("daemon")
    out = Path(tempfile.mkdtemp(prefix="ta-priv-"))  # pytest's tmp is root-only
    out.chmod(0o777)
    try:
        _pipe_and_file(po, tmp_path, user, out)
    finally:
        shutil.rmtree(out)


def _pipe_and_file(
    po: Postoffice, tmp_path: Path, user: pwd.struct_passwd, out: Path
) -> None:
    prog = f'"|id -u > {out}/uid; cat > {out}/msg"'
    file = f"{out}/folder"
    rel = _local(po, prog, file, priv=str(user.pw_uid))
    res = run_ta(
        "mailbox", po, [f"{rel}\t{prog}", f"{rel}\t{file}"], "-d", str(tmp_path)
    )
    assert [r[2] for r in res.reports] == ["ok", "ok"], res.stderr
    assert (out / "uid").read_text().strip() == str(user.pw_uid)
    assert (out / "msg").read_bytes().startswith(b"From alice@example.com ")
    assert (out / "folder").stat().st_uid == user.pw_uid
    assert (out / "folder").read_bytes().endswith(b"Bye.\n\n")
    nobody = _local(po, "|cat", priv=str(pwd.getpwnam("nobody").pw_uid))
    res = run_ta("mailbox", po, [f"{nobody}\t|cat"], "-d", str(tmp_path))
    [rep] = res.reports
    assert rep[2].startswith("error")
    assert rep[1].split("\001")[2] == "5.2.1"


def test_mail_directory_from_the_zconfig_file(po: Postoffice, tmp_path: Path) -> None:
    """ZMailer's scheduler passes agents only TZ, PATH and ZCONFIG."""
    root = tmp_path / "spoolmail"
    root.mkdir()
    (root / "gina").write_bytes(b"")
    conf = tmp_path / "zmailer.conf"
    conf.write_text(f"POSTOFFICE={po.root}\nMAILBOX={root}\n")
    rel = _local(po, "gina")
    env = {
        "TZ": "UTC",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "ZCONFIG": str(conf),
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "scheduler.ta.mailbox"],
        input=f"{rel}\tgina\n\n".encode(),
        capture_output=True,
        cwd=po.transport,
        env=env,
        timeout=30,
        check=False,
    )
    assert b"\tok" in proc.stdout, proc.stderr
    assert (root / "gina").read_bytes().startswith(b"From alice@example.com ")


def test_zmailer_flags_with_arguments_are_not_taken_for_a_host() -> None:
    from scheduler.ta import mailbox, smtp

    args = mailbox.parser().parse_known_args(
        ["-8", "-F", "edquot", "-l", "log", "-d", "/m"]
    )[0]
    assert args.host is None
    assert args.dir == "/m"
    args = smtp.parser().parse_known_args(["-l", "log", "-s", "-L", "me", "-x"])[0]
    assert args.host is None
    assert args.no_mx

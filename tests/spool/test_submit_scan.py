from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from spool import controlfile as cfm, store
from spool.errors import SubmitError
from spool.ids import hash_prefix
from spool.layout import Postoffice, init_postoffice
from spool.scan import hash_into_place, scan
from spool.submit import split_headers, submit

MESSAGE = (
    b"Received: by test\n"
    b"From: Alice <alice@example.com>\n"
    b"Message-Id: <m1@example.com>\n"
    b"Subject: hello\n"
    b"\n"
    b"body\n"
)


def test_init_postoffice(tmp_path: Path) -> None:
    po = init_postoffice(tmp_path / "po")
    for name in ("router", "queue", "transport", "deferred", "public"):
        assert (po.root / name).stat().st_mode & 0o7777 == 0o755
    for name in ("freezer", "postman"):
        assert (po.root / name).stat().st_mode & 0o7777 == 0o700
    assert init_postoffice(tmp_path / "po") == po  # idempotent
    assert po.notify_socket == po.root / ".scheduler.notify"
    assert po.pid_file == po.root / ".pid.scheduler"
    assert po.message_path("Q/I/123456") == po.queue / "Q/I/123456"
    assert po.message_path("Q/I/123456-4711", "123456") == po.queue / "Q/I/123456"


def test_submit_writes_like_the_router(po: Postoffice) -> None:
    relpath = submit(
        po,
        "alice@example.com",
        [
            "bob@Example.NET",
            "postmaster",
            "smtp-etrn etrn.example.com ivan@x",
            ("c", "h", "u"),
        ],
        MESSAGE,
        hash_levels=2,
    )
    name = relpath.rpartition("/")[2]
    message = po.message_path(relpath)
    assert os.stat(message).st_ino == int(name)
    assert relpath == hash_prefix(int(name), 2) + name
    assert message.read_bytes() == MESSAGE
    data = po.control_path(relpath).read_bytes()
    assert data.startswith(
        f"@ 0x00000007\ni {name}\no {MESSAGE.index(b'body')}\nl <m1@example.com>\n"
        "e alice@example.com\ns local - alice@example.com 0\n"
        "r           smtp example.net bob@Example.NET 0\n"
        "r           local postmaster postmaster 0\n"
        "r           smtp-etrn etrn.example.com ivan@x 0\n"
        "r           c h u 0\n"
        "m\nReceived: by test\n".encode()
    )
    assert data.endswith(b"Subject: hello\n\n")
    cf = cfm.parse(data)
    assert (
        cf.header_block(cf.recipients[0].header_offset)
        == MESSAGE[: MESSAGE.index(b"\n\n") + 1]
    )
    assert [e.relpath for e in scan(po)] == [relpath]
    assert os.listdir(po.public) == []


def test_error_message_and_generated_message_id(po: Postoffice) -> None:
    plain = b"Subject: bounce\n\nsorry\n"
    relpath = submit(po, "", ["alice@example.com"], plain, error_message=True)
    cf = cfm.parse(po.control_path(relpath).read_bytes())
    assert cf.is_error_message
    assert cf.error_address == ""
    assert cf.sender == ("error", "", "", "0")
    assert b"\ne " not in po.control_path(relpath).read_bytes()
    assert cf.log_id == f"<{relpath}.mailq-spool@{socket.gethostname()}>"
    assert po.message_path(relpath).read_bytes() == plain  # not modified


def test_split_headers() -> None:
    assert split_headers(b"A: b\r\nC: d\r\n\r\nbody") == (b"A: b\nC: d\n", 14)
    assert split_headers(b"A: b\n\nbody") == (b"A: b\n", 6)
    assert split_headers(b"A: b") == (b"A: b\n", 4)
    assert split_headers(b"\nbody") == (b"", 1)


@pytest.mark.parametrize(
    ("rcpts", "sender"),
    [
        ([], "a@b"),
        (["two words"], "a@b"),
        (["a@b"], "bad\nsender"),
        ([("c", "", "u")], "a"),
    ],
)
def test_submit_refuses_and_leaves_nothing(
    po: Postoffice, rcpts: list[str], sender: str
) -> None:
    with pytest.raises(SubmitError):
        submit(po, sender, rcpts, MESSAGE)
    for d in (po.public, po.queue, po.transport):
        assert os.listdir(d) == []


def test_submit_notifies_the_scheduler(po: Postoffice) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(os.fspath(po.notify_socket))
        relpath = submit(po, "a@b", ["c@d"], MESSAGE, hash_levels=1)
        assert sock.recv(1000) == f"NEW {relpath}".encode()
        submit(po, "a@b", ["c@d"], MESSAGE, notify=False)
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.recv(1000)
    os.unlink(po.notify_socket)
    po.notify_socket.write_bytes(b"")  # not a socket: ignored
    submit(po, "a@b", ["c@d"], MESSAGE)


def test_scan_names_and_hash_dirs(po: Postoffice) -> None:
    (po.transport / "Q" / "I").mkdir(parents=True)
    for rel in ("123456", "Q/I/7", "Q/I/8-4711", ".99", "core", "Q/x", "Q/I/.5"):
        po.control_path(rel).write_bytes(b"x\n")
    (po.transport / "lower").mkdir()
    (po.transport / "lower" / "5").write_bytes(b"x\n")
    (po.transport / "Q" / "I" / "J").mkdir()
    (po.transport / "Q" / "I" / "J" / "6").write_bytes(b"x\n")  # 3 levels: not scanned
    found = {e.relpath: e.number for e in scan(po)}
    assert found == {"123456": 123456, "Q/I/7": 7, "Q/I/8-4711": 8}
    assert [e.relpath for e in scan(po, deep=False)] == ["123456"]


def test_hash_into_place(po: Postoffice) -> None:
    relpath = submit(po, "a@b", ["c@d"], MESSAGE)
    assert "/" not in relpath
    number = int(relpath)
    new = hash_into_place(po, relpath, 2)
    assert new == hash_prefix(number, 2) + relpath
    assert oct(os.stat(po.transport / new.split("/")[0]).st_mode & 0o7777) == "0o2755"
    assert po.message_path(new).read_bytes() == MESSAGE
    assert not po.control_path(relpath).exists()
    assert [e.relpath for e in scan(po)] == [new]
    assert hash_into_place(po, new, 2) == new
    # A crash after the message moved: doing it again completes the move.
    other = submit(po, "a@b", ["c@d"], MESSAGE)
    prefix = hash_prefix(int(other), 1)
    (po.queue / prefix).mkdir(exist_ok=True)
    os.rename(po.queue / other, po.queue / (prefix + other))
    assert hash_into_place(po, other, 1) == prefix + other
    assert po.message_path(prefix + other).read_bytes() == MESSAGE
    assert store.read_control(po.control_path(prefix + other))


@pytest.fixture
def known_inode(po: Postoffice, monkeypatch: pytest.MonkeyPatch) -> int:
    """Make the next submission's temporary file a file whose i-node we know, as if
    the filesystem handed back the i-node of an unlinked message file."""
    path = po.public / ".submit-known"
    path.write_bytes(b"")
    inode = os.stat(path).st_ino

    def mkstemp(prefix: str = "", dir: object = None) -> tuple[int, str]:
        return os.open(path, os.O_RDWR | os.O_TRUNC), os.fspath(path)

    monkeypatch.setattr("spool.submit.tempfile.mkstemp", mkstemp)
    return inode


def _stale_control(po: Postoffice, relpath: str) -> bytes:
    """A control file whose message file was unlinked: only the control file is left."""
    po.control_path(relpath).parent.mkdir(parents=True, exist_ok=True)
    data = b"@ 0x00000007\ni stale\no 1\nl <stale@x>\nr           smtp h u 0\nm\n\n"
    po.control_path(relpath).write_bytes(data)
    return data


def test_submit_falls_back_to_inode_pid_names(po: Postoffice, known_inode: int) -> None:
    stale = _stale_control(po, str(known_inode))
    relpath = submit(po, "a@b", ["c@d"], MESSAGE)
    name = f"{known_inode}-{os.getpid()}"
    assert relpath == name
    assert po.control_path(str(known_inode)).read_bytes() == stale  # untouched
    assert po.message_path(relpath).read_bytes() == MESSAGE
    cf = cfm.parse(po.control_path(relpath).read_bytes())
    assert cf.mid == name
    assert po.message_path(relpath, cf.mid) == po.queue / name
    found = {e.relpath: e.number for e in scan(po)}
    assert found == {str(known_inode): known_inode, name: known_inode}
    assert os.listdir(po.public) == []
    assert sorted(os.listdir(po.transport)) == sorted([str(known_inode), name])
    # hashing takes the leading number, for the control file and the message file
    new = hash_into_place(po, relpath, 2, cf.mid)
    assert new == hash_prefix(known_inode, 2) + name
    assert po.message_path(new, cf.mid).read_bytes() == MESSAGE


def test_submit_collisions_at_any_hash_level(po: Postoffice, known_inode: int) -> None:
    pid = os.getpid()
    _stale_control(po, hash_prefix(known_inode, 2) + str(known_inode))
    _stale_control(po, hash_prefix(known_inode, 1) + f".{known_inode}-{pid}")
    relpath = submit(po, "a@b", ["c@d"], MESSAGE, hash_levels=1)
    assert relpath == hash_prefix(known_inode, 1) + f"{known_inode}-{pid}-1"
    assert po.message_path(relpath).read_bytes() == MESSAGE
    # the same i-node once more: the next free name, never "already exists"
    os.link(po.message_path(relpath), po.public / ".submit-known")
    relpath = submit(po, "a@b", ["c@d"], MESSAGE, hash_levels=1)
    assert relpath == hash_prefix(known_inode, 1) + f"{known_inode}-{pid}-2"
    assert (
        cfm.parse(po.control_path(relpath).read_bytes()).mid == f"{known_inode}-{pid}-2"
    )


def test_stale_message_file_of_the_same_inode(po: Postoffice, known_inode: int) -> None:
    (po.queue / str(known_inode)).write_bytes(b"old\n")
    relpath = submit(po, "a@b", ["c@d"], MESSAGE)
    assert relpath == f"{known_inode}-{os.getpid()}"
    assert (po.queue / str(known_inode)).read_bytes() == b"old\n"

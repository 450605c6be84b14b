"""ZMailer's counter file: its layout (golden, from the real reader), sharing it with
ZMailer's programs, and opening it safely (issue 12 item 4, issue 14 item 11)."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from spool.counterfile import open_counters, read_counters
from spool.counters import BLOCK_SIZE, MAGIC, CounterFileError, Counters

FIXTURES = Path(__file__).parent / "fixtures" / "zmailer_counters"
ZM = Path("/tmp/zm/inst/bin")
pytestmark = pytest.mark.skipif(BLOCK_SIZE != 4096, reason="recorded on 4 KiB pages")


def probe_block() -> bytearray:
    buf = bytearray(4096)
    for i in range(1, 1024):
        struct.pack_into("<I", buf, 4 * i, i)
    struct.pack_into("<I", buf, 0, MAGIC)
    return buf


def comparable(lines: list[str]) -> list[str]:
    """Mask what depends on the moment and the machine (see the fixture README)."""
    out = []
    for line in lines:
        if line.startswith(("Time_now", "SYS.Load-Avg")):
            line = line.split()[0]
        elif not line.startswith("SS.Subsys"):
            line = line.removesuffix(" NOT PRESENT!")
        out.append(line)
    return out


def test_our_reader_prints_the_probe_as_zmailers_mailq_M_does(tmp_path: Path) -> None:
    path = tmp_path / "blk"
    path.write_bytes(probe_block())
    recorded = (FIXTURES / "probe-dump.txt").read_text().splitlines()
    ours = read_counters(str(path)).dump(1796577830)
    assert comparable(ours) == comparable(recorded)


def test_a_file_zmailer_created_is_used_as_it_is(tmp_path: Path) -> None:
    recorded = json.loads((FIXTURES / "created-by-hold.json").read_text())
    buf = bytearray(recorded["size"])
    for word, value in recorded["nonzero_u32_words"].items():
        struct.pack_into("<I", buf, 4 * int(word), value)
    path = tmp_path / ".zmailer.SNMP.block"
    path.write_bytes(buf)
    with open_counters(str(path)) as block:
        assert block.magic == MAGIC
        assert block.creation_time == recorded["nonzero_u32_words"]["2"]
        assert block.get("TA-HOLD.TaProcessStarts") == 1
        block.incr("SC.ReceivedMessages", 3)
    data = path.read_bytes()
    assert len(data) == 4096
    assert struct.unpack_from("<I", data, 216 * 4)[0] == 3  # SC.ReceivedMessages
    assert struct.unpack_from("<I", data, 474 * 4)[0] == 1  # theirs kept


def test_a_new_file_is_zmailers_format(tmp_path: Path) -> None:
    path = tmp_path / "blk"
    with open_counters(str(path)) as block:
        block.set("SYS.SchedulerMasterStartTime", 1796577830)
        block.set("SC.StoredMessages-G", -1)
    data = path.read_bytes()
    assert len(data) == 4096
    assert struct.unpack_from("<I", data, 0)[0] == 0x33120006
    assert struct.unpack_from("<q", data, 18 * 4)[0] == 1796577830
    assert struct.unpack_from("<I", data, 220 * 4)[0] == 0xFFFFFFFF
    assert not list(tmp_path.glob("blk.new.*"))
    with read_counters(str(path)) as ro:
        assert ro.get("SC.StoredMessages-G") == -1
        assert "SC.StoredMessages-G                     -1" in ro.dump(0)


def test_a_short_or_empty_file_is_completed_and_keeps_its_values(
    tmp_path: Path,
) -> None:
    path = tmp_path / "blk"
    with open_counters(str(path)) as block:
        block.incr("SC.ReceivedMessages", 5)  # word 216, within the first 1000 bytes
        created = block.creation_time
    path.write_bytes(path.read_bytes()[:1000])  # half-written
    with open_counters(str(path)) as block:
        assert block.get("SC.ReceivedMessages") == 5
        assert block.creation_time == created
    assert path.stat().st_size == 4096
    path.write_bytes(b"")  # created, never written
    with open_counters(str(path)) as block:
        assert block.magic == MAGIC
        assert block.creation_time > 0
    assert path.stat().st_size == 4096


def test_our_earlier_format_is_converted(tmp_path: Path) -> None:
    from spool.counters import COUNTER_NAMES

    names = [n for n in COUNTER_NAMES if n]
    old = bytearray(32 + 8 * len(names))
    old[:8] = b"ZMPYCNT1"
    struct.pack_into("<qqq", old, 8, MAGIC, 1700000000, len(names))
    struct.pack_into("<q", old, 32 + 8 * names.index("SC.TransmittedMessages"), 42)
    path = tmp_path / "blk"
    path.write_bytes(old)
    with read_counters(str(path)) as ro:  # mailq -M reads it before the daemon ran
        assert ro.get("SC.TransmittedMessages") == 42
    with open_counters(str(path)) as block:
        assert block.get("SC.TransmittedMessages") == 42
        assert block.creation_time == 1700000000
    assert path.stat().st_size == 4096


def test_a_foreign_file_is_moved_aside_never_overwritten(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "blk"
    path.write_bytes(b"\x01" * 5000)
    with open_counters(str(path)) as block:
        assert block.magic == MAGIC
    assert (tmp_path / "blk.bad").read_bytes() == b"\x01" * 5000
    assert "moved to" in caplog.text
    (tmp_path / "x").write_bytes(b"\x07" * 4096)
    with pytest.raises(CounterFileError, match="magic value mismatch"):
        read_counters(str(tmp_path / "x"))
    with pytest.raises(CounterFileError, match="proper size"):
        read_counters(str(tmp_path / "blk.bad"))


# -- a full disk (root only: a tiny tmpfs) ---------------------------------------------


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
        capture_output=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(mnt: Path) -> None:
    fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    error = 0
    try:
        while True:
            os.write(fd, b"\1" * 4096)
    except OSError as exc:
        error = exc.errno or 0
    finally:
        os.close(fd)
    assert error == errno.ENOSPC


OPEN_AND_COUNT = (
    "import sys\n"
    "from spool.counterfile import open_counters\n"
    "from spool.counters import CounterFileError\n"
    "try:\n"
    "    c = open_counters(sys.argv[1])\n"
    "except CounterFileError as e:\n"
    "    print(e); sys.exit(3)\n"
    "c.incr('SC.ReceivedMessages'); c.close(); print('ok')\n"
)


def run_open(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", OPEN_AND_COUNT, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_full_disk_gives_a_clear_error_not_sigbus(full_disk: Path) -> None:
    (full_disk / "sparse").touch()
    os.truncate(full_disk / "sparse", 4096)  # a hole: SIGBUS if mapped and written
    fill(full_disk)
    for name in ("sparse", "new"):
        done = run_open(full_disk / name)
        assert done.returncode == 3, (done.returncode, done.stderr)
        assert done.returncode != -signal.SIGBUS
        line = done.stdout.strip()
        assert "No space left on device" in line
        assert "\n" not in line
    assert not (full_disk / "new").exists()
    assert not list(full_disk.glob("new.new.*"))
    (full_disk / "filler").unlink()  # space again: both start cleanly
    for name in ("sparse", "new"):
        assert run_open(full_disk / name).stdout == "ok\n"
        assert (full_disk / name).stat().st_size == 4096


# -- the real ZMailer (skips without it) -------------------------------------------------

needs_zmailer = pytest.mark.skipif(
    not (ZM / "mailq").exists(), reason="the real ZMailer is not built at /tmp/zm"
)


def zconf(tmp_path: Path, block: Path) -> Path:
    conf = tmp_path / "zmailer.conf"
    (tmp_path / "po").mkdir(exist_ok=True)
    conf.write_text(f"SNMPSHAREDFILE={block}\nPOSTOFFICE={tmp_path / 'po'}\n")
    return conf


@needs_zmailer
def test_real_mailq_M_reads_ours(tmp_path: Path) -> None:
    block_path = tmp_path / "blk"
    with open_counters(str(block_path)) as block:
        block.set("SYS.SchedulerMasterPID", os.getpid())
        block.incr("SC.MQ2CommandShowQueueThreads2", 7)
        block.set("SC.StoredMessages-G", 4)
        ours = block.dump(0)
    conf = zconf(tmp_path, block_path)
    done = subprocess.run(
        [str(ZM / "mailq"), "-Z", str(conf), "-M"], capture_output=True, text=True
    )
    theirs = done.stdout.splitlines()
    assert theirs[0] == "ZMailer SHM segment dump; Magic=0x33120006", done.stderr
    assert comparable(theirs) == comparable(ours)
    assert f"{'SC.MQ2CommandShowQueueThreads2':<32}{7:10d}" in theirs


@needs_zmailer
def test_our_reader_reads_a_file_zmailers_agent_made(tmp_path: Path) -> None:
    block_path = tmp_path / "blk"
    conf = zconf(tmp_path, block_path)
    env = {"ZCONFIG": str(conf), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    subprocess.run(
        [str(ZM / "ta" / "hold")],
        stdin=subprocess.DEVNULL,
        env=env,
        check=True,
        capture_output=True,
        timeout=30,
    )
    with read_counters(str(block_path)) as ro:
        assert ro.get("TA-HOLD.TaProcessStarts") == 1
    with open_counters(str(block_path)) as rw:  # and the daemon keeps using it
        rw.incr("SC.ReceivedMessages")
    subprocess.run(
        [str(ZM / "ta" / "hold")],
        stdin=subprocess.DEVNULL,
        env=env,
        check=True,
        capture_output=True,
        timeout=30,
    )
    with Counters.open(str(block_path), readonly=True) as ro:
        assert ro.get("TA-HOLD.TaProcessStarts") == 2
        assert ro.get("SC.ReceivedMessages") == 1
    real = subprocess.run(
        [str(ZM / "mailq"), "-Z", str(conf), "-M"], capture_output=True, text=True
    ).stdout
    assert re.search(r"^TA-HOLD.TaProcessStarts +2$", real, re.M)


def test_two_processes_open_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "blk"
    with open_counters(str(path)) as mine:  # held open, as by a running daemon
        mine.incr("SC.ReceivedMessages")
        done = subprocess.run(
            [sys.executable, "-c", OPEN_AND_COUNT, str(path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.stdout == "ok\n", done.stderr
        assert mine.get("SC.ReceivedMessages") == 2

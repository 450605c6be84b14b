"""The reader thread of a WHERE rcpt= scan: every file is handed to the scan once,
either read ahead (its bytes, or MISS without a hint) or left to the scan (None)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scheduler.daemon.prefetch import AHEAD, MISS, Prefetch
from tests.e2e.conftest import wait_until


@dataclass(frozen=True)
class _Msg:
    relpath: str


def test_every_file_once_read_ahead_or_left_to_the_scan(tmp_path: Path) -> None:
    n = AHEAD + 500
    for i in range(n):
        body = b"r smtp h Ann@x 0\n" if i % 7 == 0 else b"r smtp h bob@x 0\n"
        (tmp_path / str(i)).write_bytes(body)
    msgs = [_Msg(str(i)) for i in range(n)] + [_Msg("missing")]
    pre = Prefetch(str(tmp_path) + "/", msgs, [b"ann"])
    # the thread reads ahead until it is AHEAD files ahead of the scan, then waits
    wait_until(lambda: pre._stored > AHEAD, what="the reader ahead")
    got: dict[str, bytes | None] = {}
    for m in reversed(msgs[-50:]):  # beyond the thread: the scan reads them itself
        got[m.relpath] = pre.take(m.relpath)
    assert set(got.values()) == {None}
    for m in msgs[:-50]:
        got[m.relpath] = pre.take(m.relpath)
    wait_until(lambda: not pre._thread.is_alive(), what="the reader's end")
    for i in range(n):
        v = got[str(i)]
        if i <= AHEAD or v is not None:  # read ahead: the bytes, or MISS (no hint)
            assert v == (b"r smtp h Ann@x 0\n" if i % 7 == 0 else MISS)
    assert pre._cache == {}  # nothing kept for files the scan has had


def test_close_stops_the_thread(tmp_path: Path) -> None:
    for i in range(AHEAD * 2):
        (tmp_path / str(i)).write_bytes(b"x")
    pre = Prefetch(str(tmp_path) + "/", [_Msg(str(i)) for i in range(AHEAD * 2)], [])
    pre.close()
    wait_until(lambda: not pre._thread.is_alive(), what="the reader's stop")

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
    got: dict[str, bytes | None] = {}
    for m in reversed(msgs[-50:]):  # the scan runs ahead of the thread here
        got[m.relpath] = pre.take(m.relpath)
    for m in msgs[:-50]:
        got[m.relpath] = pre.take(m.relpath)
    wait_until(lambda: not pre._thread.is_alive(), what="the reader's end")
    for i in range(n):
        v = got[str(i)]
        if v is None:
            continue  # the scan reads it itself
        assert v == (b"r smtp h Ann@x 0\n" if i % 7 == 0 else MISS)
    assert got["missing"] in (None, MISS)
    assert any(v is not None for v in got.values())  # the thread did read ahead
    assert pre._cache == {}  # nothing kept for files the scan has had


def test_close_stops_the_thread(tmp_path: Path) -> None:
    for i in range(AHEAD * 2):
        (tmp_path / str(i)).write_bytes(b"x")
    pre = Prefetch(str(tmp_path) + "/", [_Msg(str(i)) for i in range(AHEAD * 2)], [])
    pre.close()
    wait_until(lambda: not pre._thread.is_alive(), what="the reader's stop")

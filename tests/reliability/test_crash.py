"""A short run of ``bench/crash_harness.py``: the real daemon and the real smtp agent
deliver to a loopback sink while the daemon and its agents are SIGKILLed and restarted.

Nothing may be lost, every duplicate must be explained by a recipient in flight at a
kill, and no control file may be left corrupt or behind. (A message file may be left
orphaned by a kill between the two unlinks of a completion: a known finding, reported
by the harness, see docs/reliability.md.) The long run (>= 100 kills) is
``python bench/crash_harness.py``; its figures are in docs/reliability.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from crash_harness import Harness  # type: ignore[import-not-found,unused-ignore]


@pytest.mark.slow
def test_sigkills_during_delivery_lose_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = argparse.Namespace(
        messages=40, rcpts=3, kills=8, seconds=50.0, max_gap=0.6, seed=3,
        sink_delay=0.02, keep=False,
    )  # fmt: skip
    root = Path(tempfile.mkdtemp(prefix="zmt"))
    harness = Harness(args, root)
    try:
        rc = harness.run()
    finally:
        if harness.proc is not None and harness.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(harness.proc.pid, signal.SIGKILL)
            harness.proc.wait()
        harness.sink.stop()
        shutil.rmtree(root, ignore_errors=True)
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "messages lost (recipients) : 0\n" in out
    assert "unexplained: 0)" in out
    assert "corrupt control files      : 0\n" in out
    assert "kills survived             : 8 " in out
    assert "left behind (ctl / msg)    : 0 / " in out  # no control file left behind

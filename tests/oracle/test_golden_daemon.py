"""A few golden records through the real daemon (``python -m scheduler serve``, frozen)
over MAILQ v2 sockets: the same replies as the recorded ZMailer ones (README.md)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from bench.oracle_diff.compare import differences
from bench.oracle_diff.gen import Message, Spool
from bench.oracle_diff.runner import collect
from tests.oracle.replay import GOLDEN, load_golden

pytestmark = pytest.mark.skipif(not GOLDEN.exists(), reason="no golden recordings")

HEADER, RECORDS = load_golden() if GOLDEN.exists() else ({}, [])
# a plain spool, one with malformed forms (seed % 3 == 0), and the biggest
CHOSEN = sorted({RECORDS[1]["seed"], RECORDS[0]["seed"], max(
    RECORDS, key=lambda r: len(r["files"]))["seed"]}) if RECORDS else []  # fmt: skip
_EPOCH = re.compile(r"(?<![\w.])\d{10}(?![\w.])")


def _shifted(text: str, delta: int) -> str:
    """Absolute times (SHOW THREAD expiry) moved by ``delta`` seconds."""
    return _EPOCH.sub(
        lambda m: str(int(m.group()) + delta) if m.group() != "0" else "0", text
    )


@pytest.mark.parametrize("seed", CHOSEN)
def test_daemon_matches_zmailer(seed: int, tmp_path: Path) -> None:
    rec: dict[str, Any] = next(r for r in RECORDS if r["seed"] == seed)
    spool = Spool(
        seed, [Message(n, t.encode("utf-8"), age) for n, t, age in rec["files"]]
    )
    now = time.time()
    ours = collect(
        spool, tmp_path, ("ours",), now=now, mailq=False, conf=HEADER["conf"]
    )["ours"]
    delta = int(now) - int(rec["now"])
    want = {k: _shifted(v, delta) for k, v in rec["replies"].items()}
    counters = ours["SHOW COUNTERS"]
    ours["SHOW COUNTERS"] = "\n".join(
        line.split(" ", 1)[0] for line in counters.split("\n")
    )
    assert differences(want, ours) == []

"""Our scheduler against replies recorded from the real ZMailer 3.0.1 (commit 70d34a57)
for generated spools (see README.md here and bench/oracle_diff/). CI has no ZMailer:
the recordings are the oracle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.oracle_diff.compare import differences
from tests.oracle.replay import GOLDEN, load_golden, our_replies

pytestmark = pytest.mark.skipif(not GOLDEN.exists(), reason="no golden recordings")

HEADER, RECORDS = load_golden() if GOLDEN.exists() else ({}, [])


@pytest.mark.parametrize("rec", RECORDS, ids=[f"seed{r['seed']}" for r in RECORDS])
def test_core_and_reports_match_zmailer(rec: dict[str, Any], tmp_path: Path) -> None:
    ours = our_replies(HEADER, rec, tmp_path)
    assert differences(rec["replies"], ours) == []


def test_the_recordings_cover_the_forms() -> None:
    """The recorded spools hold every form the issue names."""
    text = "\n".join(t for rec in RECORDS for _, t, _ in rec["files"])
    for needle in (
        " local - ",
        '"o\'hara smith"',
        "((mx1",
        "r~",
        "r+",
        "r-",
        "\nd+",
        "NOTIFY=",
        "ORCPT=",
        "s error ",
        "<>",
        "SMTP",
        "\nQ junk",
    ):
        assert needle in text, needle
    ages = [age for rec in RECORDS for _, _, age in rec["files"]]
    assert min(ages) < 0
    assert max(ages) > 4 * 86400 - 7200

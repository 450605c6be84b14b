from __future__ import annotations

from pathlib import Path

import pytest

from spool.layout import Postoffice, init_postoffice


@pytest.fixture
def po(tmp_path: Path) -> Postoffice:
    return init_postoffice(tmp_path / "postoffice")

"""The mailq client finds its ZENV file as the daemon does (spool.zenv)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import spool.zenv
from mailq.client.cli import main


def _status(env: dict[str, str | None]) -> str:
    result = CliRunner().invoke(main, ["-ss"], env={"POSTOFFICE": None, **env})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    first, second = tmp_path / "etc-zmailer.conf", tmp_path / "etc-mail.conf"
    monkeypatch.setattr(spool.zenv, "DEFAULT_ZCONFIGS", (str(first), str(second)))
    return first, second


def test_client_uses_the_first_readable_default(
    tmp_path: Path, defaults: tuple[Path, Path]
) -> None:
    first, second = defaults
    second.write_text(f"POSTOFFICE={tmp_path}/po-second\n")
    assert f"{tmp_path}/po-second/router/" in _status({"ZCONFIG": None})
    first.write_text(f"POSTOFFICE={tmp_path}/po-first\n")
    assert f"{tmp_path}/po-first/router/" in _status({"ZCONFIG": None})


def test_client_zconfig_beats_the_defaults(
    tmp_path: Path, defaults: tuple[Path, Path]
) -> None:
    first, _ = defaults
    first.write_text(f"POSTOFFICE={tmp_path}/po-first\n")
    named = tmp_path / "named.conf"
    named.write_text(f"POSTOFFICE={tmp_path}/po-named\n")
    assert f"{tmp_path}/po-named/router/" in _status({"ZCONFIG": str(named)})


def test_client_without_any_zenv_file(defaults: tuple[Path, Path]) -> None:
    assert "/var/spool/postoffice/router/" in _status({"ZCONFIG": None})

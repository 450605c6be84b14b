"""``mailq-scheduler check-config`` through click's CliRunner and as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from scheduler.daemon.cli import main
from tests.recordings import RECORDINGS

CONFIGS = RECORDINGS / "configs"
ZENVFILE = str(CONFIGS / "zmailer.conf")


def test_check_recorded_config() -> None:
    result = CliRunner().invoke(
        main, ["check-config", str(CONFIGS / "scheduler.conf"), "-Z", ZENVFILE]
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert 'PARAMauthfile = "/etc/mail/scheduler.auth"' in out
    assert (
        f"# {CONFIGS / 'scheduler.conf'}:40: clause\nsmtp/*\n\tinterval=60\t# 1m\n"
        in out
    )
    assert '\tretries="12"\n' in out
    assert out.count("\n\n") == 5  # params + default + 4 clauses, one block each


def test_check_builtin_default() -> None:
    result = CliRunner().invoke(main, ["check-config", "-Z", ZENVFILE])
    assert result.exit_code == 0, result.output
    assert "smtp/*.{se,dk,is,no}\n" in result.stdout
    assert (
        "# <built-in>:5: default clause, never matched itself\n*/*\n" in result.stdout
    )


def test_errors_go_to_stderr_with_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text("a/*\n\tfoo=1\n\tinterval=0\nPARAM authfile=x\n")
    result = CliRunner().invoke(main, ["check-config", str(bad), "-Z", ZENVFILE])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{bad}:2: unknown keyword foo",
        f"{bad}:3: bad interval '0': must be > 0 (S8)",
        f"{bad}:4: illegal syntax (PARAM needs a name right after PARAM)",
    ]


def test_warnings_do_not_fail(tmp_path: Path) -> None:
    conf = tmp_path / "w.conf"
    conf.write_text("*/*.example.com command=x\nsmtp/* interval=1h30m command=y\n")
    result = CliRunner().invoke(main, ["check-config", str(conf), "-Z", ZENVFILE])
    assert result.exit_code == 0
    assert "(S3) (warning)" in result.stderr
    assert "(S1) (warning)" in result.stderr
    assert "\tinterval=5400\t# 1h30m\n" in result.stdout


def test_missing_zenv_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["check-config", "-Z", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert "cannot read ZENV file" in result.stderr


def test_python_dash_m_subprocess(tmp_path: Path) -> None:
    env = {**os.environ, "MAILSHARE": "/from/env"}
    ok = subprocess.run(
        [sys.executable, "-m", "scheduler", "check-config", "-Z", ZENVFILE],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert 'PARAMauthfile = "/from/env/scheduler.auth"' in ok.stdout  # env beats file
    bad = tmp_path / "bad.conf"
    bad.write_text("x/* nope\n")
    failed = subprocess.run(
        [sys.executable, "-m", "scheduler", "check-config", str(bad), "-Z", ZENVFILE],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (failed.returncode, failed.stdout) == (1, "")
    assert failed.stderr == f"{bad}:1: unknown keyword nope\n"

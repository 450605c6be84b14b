"""mailq-spool as a user runs it: subprocesses and click's CliRunner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from spool import store
from spool.cli import main
from spool.controlfile import format_diagnostic, parse
from spool.layout import Postoffice
from tests.spool.golden import recorded

MESSAGE = b"From: a@b\nSubject: hi\n\nbody\n"


def run(
    *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spool", *args],
        input=stdin.decode(),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_init_submit_list_check_in_subprocesses(tmp_path: Path) -> None:
    root = tmp_path / "po"
    done = run("init", str(root))
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(root)) == [
        "deferred",
        "freezer",
        "postman",
        "public",
        "queue",
        "router",
        "transport",
    ]
    done = run(
        "submit",
        "-P",
        str(root),
        "-f",
        "alice@example.com",
        "-H",
        "2",
        "bob@Example.ORG",
        "carl",
        stdin=MESSAGE,
    )
    assert done.returncode == 0, done.stderr
    relpath = done.stdout.strip()
    assert relpath.count("/") == 2
    assert (root / "queue" / relpath).read_bytes() == MESSAGE
    done = run(
        "submit", "-f", "x@y", "smtp h u", stdin=MESSAGE, env={"POSTOFFICE": str(root)}
    )
    assert done.returncode == 0, done.stderr
    second = done.stdout.strip()
    rcpt = parse(store.read_control(root / "transport" / second)).recipients[0].offset
    store.append_diagnostic(
        root / "transport" / second,
        format_diagnostic(rcpt, -1, -1, 1795312765, "n", "try\nlater"),
    )
    done = run("list", "-P", str(root), "--json")
    assert done.returncode == 0, done.stderr
    records = {r["path"]: r for r in map(json.loads, done.stdout.splitlines())}
    assert set(records) == {relpath, second}
    first = records[relpath]
    assert first["sender"] == "alice@example.com"
    assert first["spool_id"].startswith("S" + relpath.rpartition("/")[2])
    assert first["size"] == len(MESSAGE)
    assert first["age"] >= 0
    assert first["mid"] == relpath.rpartition("/")[2]
    assert first["log_id"].endswith(".mailq-spool@" + os.uname().nodename + ">")
    assert [
        (r["channel"], r["host"], r["user"], r["status"]) for r in first["recipients"]
    ] == [
        ("smtp", "example.org", "bob@Example.ORG", " "),
        ("local", "carl", "carl", " "),
    ]
    assert records[second]["diagnostics"] == [
        {
            "rcpt_offset": rcpt,
            "time": 1795312765,
            "notary": "n",
            "message": "try\rlater",
            "reported": False,
        }
    ]
    done = run("list", "-P", str(root))
    assert done.returncode == 0
    assert f"{relpath} S" in done.stdout
    assert "last diagnostic at 1795312765: try later" in done.stdout
    done = run("check", "-P", str(root))
    assert (done.returncode, done.stdout) == (0, "")


def test_check_reports_and_quarantines(tmp_path: Path) -> None:
    runner = CliRunner()
    root = tmp_path / "po"
    assert runner.invoke(main, ["init", str(root)]).exit_code == 0
    po = Postoffice(root)
    files = recorded()
    (po.transport / "100001").write_bytes(files["100001"])  # message file missing
    (po.transport / "100002").write_bytes(files["100002"][:-2])  # truncated
    (po.transport / "100003").write_bytes(b"@ 0x00000008\ni 100003\n")
    (po.transport / "100004").write_bytes(files["100004"].replace(b"i 100004\n", b""))
    (po.queue / "100004").write_bytes(MESSAGE)
    (po.transport / "100005").write_bytes(files["100005"])
    (po.queue / "100005").write_bytes(MESSAGE)
    result = runner.invoke(main, ["check", "-P", str(root)])
    assert result.exit_code == 1
    t = po.transport
    assert sorted(result.output.splitlines()) == [
        f"{t}/100001:2: missing message file {po.queue}/100001",
        f"{t}/100002:16: truncated: no final newline",
        f"{t}/100003:1: unknown/unsupported format set: 0x00000008",
        f"{t}/100004:1: missing 'i' line (message file name)",
    ]
    result = runner.invoke(main, ["check", "-P", str(root), "--quarantine"])
    assert result.exit_code == 1
    assert sorted(os.listdir(po.transport)) == ["100005"]
    assert sorted(os.listdir(po.freezer)) == [
        "100001",
        "100001.reason",
        "100002",
        "100002.reason",
        "100003",
        "100003.reason",
        "100004",
        "100004.msg",
        "100004.reason",
    ]
    assert (po.freezer / "100002").read_bytes() == files["100002"][:-2]
    result = runner.invoke(main, ["check", "-P", str(root)])
    assert (result.exit_code, result.output) == (0, "")


def test_list_reports_corrupt_files_and_goes_on(tmp_path: Path) -> None:
    runner = CliRunner()
    root = tmp_path / "po"
    runner.invoke(main, ["init", str(root)])
    (root / "transport" / "1").write_bytes(b"@ zz\n")
    (root / "transport" / "100001").write_bytes(recorded()["100001"])
    (root / "queue" / "100001").write_bytes(MESSAGE)
    result = runner.invoke(main, ["list", "-P", str(root), "--json"])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert json.loads(lines[0])["path"] == "100001"
    assert any("1:1: bad '@' line" in line for line in lines)


def test_submit_errors_are_messages(tmp_path: Path) -> None:
    runner = CliRunner()
    root = tmp_path / "po"
    runner.invoke(main, ["init", str(root)])
    result = runner.invoke(
        main, ["submit", "-P", str(root), "-f", "a@b", "two words"], input=MESSAGE
    )
    assert result.exit_code == 1
    assert "Error: bad recipient 'two words'" in result.output
    result = runner.invoke(
        main, ["submit", "-f", "a@b", "x"], input=MESSAGE, env={"POSTOFFICE": ""}
    )
    assert result.exit_code == 2


def test_list_of_a_missing_postoffice_fails_with_a_message(tmp_path: Path) -> None:
    result = run("list", "-P", str(tmp_path / "nonexistent"))
    assert result.returncode == 1
    assert result.stdout == ""
    assert "nonexistent is not a postoffice (no transport/ directory)" in result.stderr

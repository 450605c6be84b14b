"""Our agents given exactly what the real scheduler gives them (recorded fixture)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from spool.layout import Postoffice
from spool.submit import submit
from tests.scheduler.ta.conftest import MESSAGE

VIEW = json.loads((Path(__file__).parent / "fixtures" / "agent_view.json").read_text())
PROJECT = Path(__file__).resolve().parents[3]


def test_recorded_view_is_what_we_expect() -> None:
    assert set(VIEW["env"]) - {"LC_CTYPE"} == {"ZCONFIG"}
    assert VIEW["cwd"].endswith("/po/transport")
    job, idle = VIEW["lines"]
    assert job.count("\t") == 1
    assert job.endswith("\tdave\n")
    assert idle == "#idle\n"


def test_mailbox_agent_with_only_zconfig(po: Postoffice, tmp_path: Path) -> None:
    mail = tmp_path / "mail"
    mail.mkdir()
    (mail / "dave").write_bytes(b"")
    conf = tmp_path / "zmailer.conf"
    conf.write_text(f"POSTOFFICE={po.root}\nMAILBOX={mail}\n")
    rel = submit(
        po, "alice@example.com", [("local", "dave", "dave")], MESSAGE, hash_levels=2
    )
    env = {k: str(conf) for k in VIEW["env"] if k == "ZCONFIG"}
    env["PYTHONPATH"] = str(PROJECT)  # what a site's wrapper script would set
    proc = subprocess.run(
        [sys.executable, "-m", "scheduler.ta.mailbox", *VIEW["argv"]],
        input=f"{rel}\tdave\n#idle\n".encode(),
        capture_output=True,
        cwd=po.transport,
        env=env,
        timeout=30,
        check=False,
    )
    out = proc.stdout.decode().splitlines()
    assert out[0] == "#hungry", proc.stderr
    assert out[1].split("\t")[2].startswith("ok ")
    assert out[2:] == ["#hungry", "#hungry"]
    assert (mail / "dave").read_bytes().startswith(b"From alice@example.com ")
    assert b"\nr+" in po.control_path(rel).read_bytes()

"""``mailq -M`` on ZMailer's counter file (issue 12 item 4): the file ZMailer's programs
made, read as its own ``mailq -M`` reads it; damaged files give one clear error."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

from click.testing import CliRunner

from mailq.client.cli import main

ENV = {"ZCONFIG": "/nonexistent", "MAILSERVER": "", "POSTOFFICE": "/nonexistent"}
FIXTURES = Path(__file__).parents[2] / "spool" / "fixtures" / "zmailer_counters"


def run_M(tmp_path: Path, block: bytes) -> tuple[int, str, str]:
    shared = tmp_path / ".zmailer.SNMP.block"
    shared.write_bytes(block)
    zenv = tmp_path / "zmailer.conf"
    zenv.write_text(f"SNMPSHAREDFILE={shared}\nPOSTOFFICE={tmp_path}\n")
    result = CliRunner().invoke(
        main, ["-Z", str(zenv), "-M"], prog_name="mailq", env=ENV
    )
    return result.exit_code, result.stdout, result.stderr


def test_reads_the_file_zmailers_agent_created(tmp_path: Path) -> None:
    recorded = json.loads((FIXTURES / "created-by-hold.json").read_text())
    block = bytearray(recorded["size"])
    for word, value in recorded["nonzero_u32_words"].items():
        struct.pack_into("<I", block, 4 * int(word), value)
    code, out, err = run_M(tmp_path, bytes(block))
    assert code == 0, err
    assert out.startswith("ZMailer SHM segment dump; Magic=0x33120006\n")
    assert re.search(r"^TA-HOLD.TaProcessStarts +1$", out, re.M)
    created = recorded["nonzero_u32_words"]["2"]
    assert f"Block_creation_time             {created}\n" in out


def test_a_damaged_file_is_one_clear_error(tmp_path: Path) -> None:
    code, out, err = run_M(tmp_path, b"\x07" * 4096)
    assert code == 69
    assert out == ""
    assert "magic value mismatch (0x07070707)" in err
    assert "Traceback" not in err
    code, _, err = run_M(tmp_path, b"\x06\x00\x12\x33" + b"\0" * 100)
    assert code == 69
    assert "not of the proper size (104 bytes, not 4096)" in err

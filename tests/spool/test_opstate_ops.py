"""The operation log in the postoffice (``.mailq-ops``): appended, marks applied, torn
lines skipped, rewritten with the newest records once it is twice as long."""

from __future__ import annotations

from pathlib import Path

from spool import opstate


def _op(n: int, verb: str = "HOLD") -> dict[str, str]:
    return {"id": f"O1-{n}", "verb": verb, "command": f"{verb} WHERE host=x\tAND"}


def test_append_read_and_mark(tmp_path: Path) -> None:
    assert opstate.read_ops(tmp_path) == []
    opstate.append_op(tmp_path, _op(1))
    opstate.append_op(tmp_path, _op(2, "RELEASE"))
    opstate.append_op(tmp_path, {"undone": "O1-1"})
    opstate.append_op(tmp_path, {"undone": "O9-9"})  # unknown: ignored
    ops = opstate.read_ops(tmp_path)
    assert [o["id"] for o in ops] == ["O1-1", "O1-2"]
    assert ops[0]["undone"] == "1"
    assert "undone" not in ops[1]
    assert ops[0]["command"] == "HOLD WHERE host=x AND"  # TABs cleaned


def test_a_torn_append_is_skipped_and_the_next_one_kept(tmp_path: Path) -> None:
    opstate.append_op(tmp_path, _op(1))
    with (tmp_path / opstate.OPS_FILE).open("ab") as f:
        f.write(b"id=O1-2\tverb=HO")  # SIGKILL in the middle of a write
    assert [o["id"] for o in opstate.read_ops(tmp_path)] == ["O1-1"]
    opstate.append_op(tmp_path, _op(3))
    assert [o["id"] for o in opstate.read_ops(tmp_path)] == ["O1-1", "O1-3"]


def test_rewritten_with_the_newest_and_their_sids_files_go(tmp_path: Path) -> None:
    opstate.write_op_sids(tmp_path, "O1-0", ["S1", "S2"])
    assert opstate.read_op_sids(tmp_path, "O1-0") == ["S1", "S2"]
    opstate.append_op(tmp_path, _op(0, "RELEASE"), keep=3)
    for n in range(1, 6):
        opstate.append_op(tmp_path, _op(n), keep=3)
    assert [o["id"] for o in opstate.read_ops(tmp_path)] == ["O1-3", "O1-4", "O1-5"]
    assert len((tmp_path / opstate.OPS_FILE).read_text().splitlines()) == 3
    assert opstate.read_op_sids(tmp_path, "O1-0") == []
    assert opstate.read_op_sids(tmp_path, "../x") == []

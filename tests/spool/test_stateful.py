"""The store against a dict model, with crash points (hypothesis stateful testing)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import settings, strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
)

from spool import controlfile as cfm, store
from spool.ids import hash_prefix
from spool.layout import init_postoffice
from spool.scan import hash_into_place, make_hash_dirs, scan
from spool.submit import build_control, split_headers, submit

USERS = st.lists(
    st.sampled_from(["a@x.org", "b@y.net", "local1", "smtp h u"]),
    min_size=1,
    max_size=4,
)


class SpoolMachine(RuleBasedStateMachine):
    messages = Bundle("messages")

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="spool-sm-"))
        self.po = init_postoffice(self.tmp / "po")
        self.model: dict[str, list[str]] = {}  # relpath -> recipient statuses
        self.diags: dict[str, int] = {}
        self.offsets: dict[str, list[int]] = {}

    def teardown(self) -> None:
        shutil.rmtree(self.tmp)

    @rule(target=messages, rcpts=USERS, levels=st.integers(0, 2))
    def submit(self, rcpts: list[str], levels: int) -> str:
        relpath = submit(
            self.po, "s@x", rcpts, b"Subject: t\n\nbody\n", hash_levels=levels
        )
        cf = cfm.parse(store.read_control(self.po.control_path(relpath)))
        self.model[relpath] = [" "] * len(rcpts)
        self.offsets[relpath] = [r.offset for r in cf.recipients]
        self.diags[relpath] = 0
        return relpath

    @rule(
        point=st.sampled_from(["message-tmp", "control-tmp"]), levels=st.integers(0, 2)
    )
    def crash_during_submit(self, point: str, levels: int) -> None:
        """Leave what a submit killed at that point leaves behind (no cleanup)."""
        fd, tmpname = tempfile.mkstemp(prefix=".submit-", dir=self.po.public)
        os.write(fd, b"Subject: t\n\nbody\n")
        name = str(os.fstat(fd).st_ino)
        os.close(fd)
        if point == "message-tmp":
            return
        prefix = hash_prefix(int(name), levels)
        make_hash_dirs(self.po, prefix)
        os.link(tmpname, self.po.queue / (prefix + name))
        os.unlink(tmpname)
        headers, body = split_headers(b"Subject: t\n\nbody\n")
        data = build_control(name, "s@x", [("local", "u", "u")], headers, body)
        (self.po.transport / (prefix + "." + name)).write_bytes(data[: len(data) // 2])

    @rule(relpath=messages, index=st.integers(0, 3), pid=st.integers(1, 99999))
    def lock(self, relpath: str, index: int, pid: int) -> None:
        if relpath not in self.model or index >= len(self.model[relpath]):
            return
        got = store.lock_recipient(
            self.po.control_path(relpath), self.offsets[relpath][index], pid
        )
        assert got == (self.model[relpath][index] == " ")
        if got:
            self.model[relpath][index] = "~"

    @rule(relpath=messages, index=st.integers(0, 3), mark=st.sampled_from("+- "))
    def mark(self, relpath: str, index: int, mark: str) -> None:
        if relpath not in self.model or index >= len(self.model[relpath]):
            return
        store.mark_recipient(
            self.po.control_path(relpath), self.offsets[relpath][index], mark
        )
        self.model[relpath][index] = mark

    @rule(relpath=messages, index=st.integers(0, 3))
    def diagnose(self, relpath: str, index: int) -> None:
        if relpath not in self.model or index >= len(self.model[relpath]):
            return
        line = cfm.format_diagnostic(self.offsets[relpath][index], -1, -1, 1, "n", "m")
        store.append_diagnostic(self.po.control_path(relpath), line, fsync=False)
        self.diags[relpath] += 1

    @rule()
    def restart(self) -> None:
        """A new scheduler: stale locks (dead PIDs) are reset, top-level files hashed."""
        for entry in scan(self.po):
            path = self.po.control_path(entry.relpath)
            store.reset_stale_locks(path, lambda pid: False)
            statuses = self.model[entry.relpath]
            self.model[entry.relpath] = [" " if s == "~" else s for s in statuses]
            new = hash_into_place(self.po, entry.relpath, 2)
            if new != entry.relpath:
                self.model[new] = self.model.pop(entry.relpath)
                self.diags[new] = self.diags.pop(entry.relpath)
                self.offsets[new] = self.offsets.pop(entry.relpath)

    @rule(relpath=consumes(messages))
    def remove(self, relpath: str) -> None:
        if relpath not in self.model:
            return
        store.remove_message(self.po, relpath, relpath.rpartition("/")[2])
        del self.model[relpath], self.diags[relpath], self.offsets[relpath]

    @invariant()
    def spool_matches_model(self) -> None:
        assert sorted(e.relpath for e in scan(self.po)) == sorted(self.model)
        for relpath, statuses in self.model.items():
            cf = cfm.parse(store.read_control(self.po.control_path(relpath)))
            assert [r.status for r in cf.recipients] == statuses
            assert len(cf.diagnostics) == self.diags[relpath]
            assert self.po.message_path(relpath, cf.mid).is_file()


SpoolMachine.TestCase.settings = settings(
    max_examples=30, stateful_step_count=25, deadline=None
)
TestSpool = SpoolMachine.TestCase

"""Fixtures for the transport-agent tests: a temporary postoffice and an agent runner."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from spool import controlfile
from spool.controlfile import ControlFile
from spool.layout import Postoffice, init_postoffice

MESSAGE = (
    b"From: Alice <alice@example.com>\n"
    b"To: bob@ok.example\n"
    b"Subject: agent test\n"
    b"Message-ID: <agent-test@example.com>\n"
    b"\n"
    b"Hello.\n"
    b".a line starting with a dot\n"
    b"Bye.\n"
)


@dataclass
class TaResult:
    lines: list[str]
    stderr: str
    returncode: int

    @property
    def reports(self) -> list[list[str]]:
        """Diagnostic lines split into [id/offset, notary, status, message]."""
        out = []
        for line in self.lines:
            if line.startswith("#") or not line:
                continue
            ident, notary, rest = line.split("\t", 2)
            status, _, message = rest.partition(" ")
            out.append([ident, notary, status, message])
        return out


@pytest.fixture
def po(tmp_path: Path) -> Postoffice:
    return init_postoffice(tmp_path / "po")


def run_ta(
    module: str,
    po: Postoffice,
    jobs: Sequence[str],
    *args: str,
    env: Mapping[str, str] | None = None,
    end: str = "\n",
    timeout: float = 30,
) -> TaResult:
    """Run ``python -m scheduler.ta.<module>`` in ``transport/``, feed the job lines."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    data = "".join(j + "\n" for j in jobs) + end
    proc = subprocess.run(
        [sys.executable, "-m", f"scheduler.ta.{module}", *args],
        input=data.encode(),
        capture_output=True,
        cwd=po.transport,
        env=full_env,
        timeout=timeout,
        check=False,
    )
    return TaResult(
        proc.stdout.decode().splitlines(), proc.stderr.decode(), proc.returncode
    )


def control(po: Postoffice, relpath: str) -> ControlFile:
    path = po.control_path(relpath)
    return controlfile.parse(path.read_bytes(), str(path))


def add_after_recipients(
    po: Postoffice, relpath: str, lines: Mapping[str, bytes]
) -> None:
    """Insert a line (e.g. ``N NOTIFY=SUCCESS``) after the r line of each given user."""
    path = po.control_path(relpath)
    out = []
    for raw in path.read_bytes().splitlines(keepends=True):
        out.append(raw)
        if raw.startswith(b"r"):
            user = controlfile.parse_quad(raw[12:].decode().rstrip("\n"))[2]
            if user in lines:
                out.append(lines[user])
    path.write_bytes(b"".join(out))


def statuses(po: Postoffice, relpath: str) -> dict[str, str]:
    return {r.user: r.status for r in control(po, relpath).recipients}

"""``|program`` and ``/file`` recipients, run or written with the recipient's privilege.

The router puts the uid whose rights apply in the recipient's privilege field (the
fourth word of the ``r`` line). Only an agent running as root can take that identity;
otherwise such recipients are refused (permanent 5.2.1), as they are when the privilege
is ``nobody``'s, as ZMailer's mailbox does. A program gets the message on its standard
input (From_ line first, as ZMailer writes it); exit 0 is delivered, 75 (EX_TEMPFAIL)
deferred, anything else failed with the program's first line of output. A file is
appended to as an mbox (fcntl lock only, as ZMailer's default ``MBOXLOCKS``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from scheduler.ta.mailstores import write_mbox

__all__ = ["Identity", "PrivilegeRefused", "as_identity", "identity_for", "run_program"]

EX_TEMPFAIL = 75
NOBODY_NAMES = ("nobody",)


class PrivilegeRefused(Exception):
    """The recipient may not run a program or write a file (reason in the message)."""


@dataclass(frozen=True, slots=True)
class Identity:
    uid: int
    gid: int
    name: str
    home: str


def nobody_uid() -> int:
    try:
        return pwd.getpwnam("nobody").pw_uid
    except KeyError:
        return 65534


def identity_for(privilege: str, is_root: bool, what: str) -> Identity:
    """The identity to run ``what`` ("program"/"file") as; raises PrivilegeRefused."""
    try:
        uid = int(privilege.strip())
    except ValueError as exc:
        raise PrivilegeRefused(
            f"privilege code invalid (non-numeric): {privilege!r}"
        ) from exc
    if uid < 0 or uid == nobody_uid():
        raise PrivilegeRefused(f"mail to {what} disallowed w/o proper privileges")
    if not is_root:
        raise PrivilegeRefused(f"mail to {what} needs the agent to run as root")
    try:
        pw = pwd.getpwuid(uid)
    except KeyError as exc:
        raise PrivilegeRefused(
            f"privilege code invalid (no user with uid {uid})"
        ) from exc
    return Identity(uid, pw.pw_gid, pw.pw_name, pw.pw_dir or "/")


@contextlib.contextmanager
def as_identity(who: Identity) -> Iterator[None]:
    """Take ``who``'s effective uid/gid (no supplementary groups) for the block."""
    groups = os.getgroups()
    os.setgroups([])
    os.setegid(who.gid)
    os.seteuid(who.uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)
        os.setgroups(groups)


def append_file(path: str, who: Identity, entry: bytes) -> None:
    """Append an mbox entry to ``path`` with ``who``'s rights (a new file is 0600)."""
    if path == "/dev/null":
        return
    with as_identity(who):
        write_mbox(path, entry, dot=False)


@dataclass(frozen=True, slots=True)
class ProgramResult:
    status: str  # ok | deferred | error
    text: str


def run_program(
    command: str,
    who: Identity,
    data: bytes,
    env: Mapping[str, str],
    timeout: float,
) -> ProgramResult:
    """Run ``/bin/sh -c command`` as ``who`` with ``data`` on stdin."""
    full_env = {"SHELL": "/bin/sh", "HOME": who.home, "USER": who.name, **env}
    try:
        proc = subprocess.run(
            ["/bin/sh", "-c", command],
            input=data,
            capture_output=True,
            env=full_env,
            cwd=who.home if os.path.isdir(who.home) else "/",
            user=who.uid,
            group=who.gid,
            extra_groups=[],
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return ProgramResult("deferred", f"program timed out after {timeout:g}s")
    except OSError as exc:
        return ProgramResult(
            "deferred", f"cannot run the program: {exc.strerror or exc}"
        )
    output = (proc.stdout + proc.stderr).decode("utf-8", "replace").strip()
    first = output.splitlines()[0][:200] if output else ""
    if proc.returncode == 0:
        return ProgramResult("ok", "Delivered to the program")
    tail = (
        f"[exit status {proc.returncode}]"
        if proc.returncode > 0
        else f"[signal {-proc.returncode}]"
    )
    text = f"{first} {tail}".strip()
    if proc.returncode == EX_TEMPFAIL:
        return ProgramResult("deferred", text)
    return ProgramResult("error", text)

"""Operator state in the postoffice: holds, destination rules, the operation log, the trash.

ZMailer has no hold or rule state, so ours lives in side files that ZMailer ignores (its
programs never read dot-files of the postoffice root), leaving control files untouched:

* ``.mailq-holds``: one held message a line, ``spool-id TAB since TAB op TAB reason``.
* ``.mailq-rules``: one suspension or policy a line, ``key=value`` fields TAB-separated.
* ``.mailq-ops``: the operation log (``SHOW OPS``, ``UNDO``), one record a line in
  ``key=value`` fields TAB-separated and ``end=.`` last, appended (``O_APPEND``,
  fsync) as operations happen; a line ``undone=<op>`` marks an operation undone. A line
  torn by a crash in the middle of an append lacks ``end=.`` and is skipped when read; the file is rewritten whole (as
  below) with the newest :data:`OPS_KEPT` records once it holds twice as many lines.
  ``.mailq-ops-sids/<op>``: the spool-ids a ``RELEASE`` released (its ``UNDO`` holds
  them again), one a line, written whole before the record.
* ``.mailq-trash/<op>/``: messages removed by ``DELETE``: ``transport/<relpath>`` and
  ``queue/<relpath>`` moved under it, with ``DONE`` written when the move completed.

Each side file is replaced whole (tmp, fsync, rename, fsync of the directory), so a crash
leaves the old or the new file, never a mix: after a SIGKILL in a bulk ``HOLD`` every
message is held or not, as the old or new file says. A trash move is per message:
control file first (the scheduler then no longer sees it), then the message file;
:func:`recover_trash` finishes a move that a crash interrupted, in either direction.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from spool.store import fsync_dir, write_all

__all__ = [
    "HOLDS_FILE",
    "OPS_FILE",
    "OPS_KEPT",
    "RULES_FILE",
    "TRASH_DIR",
    "append_op",
    "list_trash",
    "move_to_trash",
    "purge_trash",
    "read_holds",
    "read_op_sids",
    "read_ops",
    "read_rules",
    "recover_trash",
    "restore_from_trash",
    "write_holds",
    "write_op_sids",
    "write_rules",
]

HOLDS_FILE = ".mailq-holds"
RULES_FILE = ".mailq-rules"
TRASH_DIR = ".mailq-trash"
OPS_FILE = ".mailq-ops"
OPS_SIDS_DIR = ".mailq-ops-sids"
OPS_KEPT = 1000
_UNDONE = "UNDONE"


def _clean(text: str) -> str:
    return text.replace("\t", " ").replace("\n", " ").replace("\r", " ")


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_holds(root: Path, holds: Iterable[tuple[str, int, str, str]]) -> None:
    """Replace ``.mailq-holds`` with (spool-id, since, op, reason) rows."""
    lines = [
        f"{sid}\t{since}\t{_clean(op)}\t{_clean(reason)}\n"
        for sid, since, op, reason in holds
    ]
    _replace(root / HOLDS_FILE, "".join(lines).encode("utf-8", "surrogateescape"))


def read_holds(root: Path) -> list[tuple[str, int, str, str]]:
    """The rows of ``.mailq-holds`` (none when the file is absent); bad lines skipped."""
    try:
        data = (root / HOLDS_FILE).read_bytes()
    except FileNotFoundError:
        return []
    rows = []
    for line in data.decode("utf-8", "surrogateescape").splitlines():
        parts = line.split("\t", 3)
        if len(parts) == 4 and parts[0].startswith("S") and parts[1].isdigit():
            rows.append((parts[0], int(parts[1]), parts[2], parts[3]))
    return rows


def write_rules(root: Path, rules: Iterable[Mapping[str, str]]) -> None:
    lines = [
        "\t".join(f"{k}={_clean(str(v))}" for k, v in r.items()) + "\n" for r in rules
    ]
    _replace(root / RULES_FILE, "".join(lines).encode("utf-8", "surrogateescape"))


def read_rules(root: Path) -> list[dict[str, str]]:
    try:
        data = (root / RULES_FILE).read_bytes()
    except FileNotFoundError:
        return []
    out = []
    for line in data.decode("utf-8", "surrogateescape").splitlines():
        fields = dict(f.split("=", 1) for f in line.split("\t") if "=" in f)
        if fields.get("id") and fields.get("kind"):
            out.append(fields)
    return out


# -- the operation log -----------------------------------------------------------------


def _op_line(fields: Mapping[str, str]) -> str:
    """A record's line; its last field ``end=.`` tells a whole line from a torn one."""
    body = "\t".join(f"{k}={_clean(str(v))}" for k, v in fields.items() if k != "end")
    return body + "\tend=.\n"


def append_op(root: Path, fields: Mapping[str, str], keep: int = OPS_KEPT) -> None:
    """Append one record (``id`` first) or mark (``undone``) to ``.mailq-ops``; when
    the file has grown to twice ``keep`` lines, rewrite it with the newest ``keep``."""
    path = root / OPS_FILE
    data = _op_line(fields).encode("utf-8", "surrogateescape")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        size = os.fstat(fd).st_size
        created = size == 0
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # after a torn append: keep it on a line of its own
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_dir(root)
    with path.open("rb") as f:
        lines = sum(1 for _ in f)
    if lines >= 2 * keep:
        _compact_ops(root, keep)


def _compact_ops(root: Path, keep: int) -> None:
    ops = read_ops(root)
    kept, dropped = ops[-keep:], ops[:-keep]
    _replace(root / OPS_FILE, "".join(_op_line(o) for o in kept).encode())
    for o in dropped:
        with contextlib.suppress(OSError, ValueError):
            _sids_path(root, o["id"]).unlink()


def read_ops(root: Path) -> list[dict[str, str]]:
    """The records of ``.mailq-ops``, oldest first, marks applied (``undone=1``)."""
    try:
        data = (root / OPS_FILE).read_bytes()
    except FileNotFoundError:
        return []
    ops: dict[str, dict[str, str]] = {}
    text = data.decode("utf-8", "surrogateescape")
    lines = text.split("\n")
    lines.pop()  # what follows the last newline: empty, or a torn append
    for line in lines:
        fields = dict(f.split("=", 1) for f in line.split("\t") if "=" in f)
        if fields.pop("end", "") != ".":
            continue  # torn by a crash
        if "undone" in fields and "id" not in fields:
            if fields["undone"] in ops:
                ops[fields["undone"]]["undone"] = "1"
        elif fields.get("id") and fields.get("verb"):
            ops[fields["id"]] = fields
    return list(ops.values())


def _sids_path(root: Path, op: str) -> Path:
    if not op or "/" in op or op.startswith("."):
        raise ValueError(f"bad operation id {op!r}")
    return root / OPS_SIDS_DIR / op


def write_op_sids(root: Path, op: str, sids: Iterable[str]) -> None:
    path = _sids_path(root, op)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    _replace(path, "".join(f"{s}\n" for s in sids).encode("ascii", "replace"))


def read_op_sids(root: Path, op: str) -> list[str]:
    try:
        return _sids_path(root, op).read_text("ascii", "replace").split()
    except (OSError, ValueError):
        return []


# -- the trash --------------------------------------------------------------------------


def _trash(root: Path, op: str) -> Path:
    if not op or "/" in op or op.startswith("."):
        raise ValueError(f"bad operation id {op!r}")
    return root / TRASH_DIR / op


def _move(src: Path, dst: Path) -> bool:
    try:
        os.rename(src, dst)
    except FileNotFoundError:
        return False
    return True


def move_to_trash(root: Path, op: str, relpath: str, mid: str) -> bool:
    """Move one message (control file, then message file) into the operation's trash."""
    base = _trash(root, op)
    ctl_dst = base / "transport" / relpath
    msg_rel = _message_rel(relpath, mid)
    msg_dst = base / "queue" / msg_rel
    ctl_dst.parent.mkdir(parents=True, exist_ok=True)
    msg_dst.parent.mkdir(parents=True, exist_ok=True)
    if not _move(root / "transport" / relpath, ctl_dst):
        return False
    _move(root / "queue" / msg_rel, msg_dst)
    return True


def _message_rel(relpath: str, mid: str) -> str:
    prefix, _, _name = relpath.rpartition("/")
    return f"{prefix}/{mid}" if prefix else mid


def trash_entries(root: Path, op: str) -> Iterator[str]:
    """Relative paths of the control files in an operation's trash."""
    base = _trash(root, op) / "transport"
    if not base.is_dir():
        return
    for dirpath, _dirs, files in os.walk(base):
        for name in files:
            yield Path(dirpath, name).relative_to(base).as_posix()


def restore_from_trash(root: Path, op: str) -> list[str]:
    """Move every message of ``op`` back (message file first, then control file)."""
    base = _trash(root, op)
    restored = []
    for relpath in list(trash_entries(root, op)):
        src_ctl = base / "transport" / relpath
        mid = _mid_of(src_ctl) or relpath.rpartition("/")[2]
        msg_rel = _message_rel(relpath, mid)
        dst_msg = root / "queue" / msg_rel
        dst_msg.parent.mkdir(parents=True, exist_ok=True)
        _move(base / "queue" / msg_rel, dst_msg)
        dst_ctl = root / "transport" / relpath
        dst_ctl.parent.mkdir(parents=True, exist_ok=True)
        if _move(src_ctl, dst_ctl):
            restored.append(relpath)
    (base / _UNDONE).write_bytes(b"")
    return restored


def _mid_of(control: Path) -> str | None:
    try:
        with control.open("rb") as f:
            for raw in f:
                if raw.startswith(b"i "):
                    return raw[2:].strip().decode("utf-8", "surrogateescape")
    except OSError:
        return None
    return None


def recover_trash(root: Path) -> int:
    """Finish moves a crash interrupted: a trashed control file's message file that
    is still in ``queue/`` joins it; an undone operation's leftovers go back. Returns
    the messages fixed."""
    top = root / TRASH_DIR
    if not top.is_dir():
        return 0
    fixed = 0
    for opdir in sorted(top.iterdir()):
        if not opdir.is_dir():
            continue
        op = opdir.name
        if (opdir / _UNDONE).exists():
            if any(True for _ in trash_entries(root, op)):
                fixed += len(restore_from_trash(root, op))
            continue
        for relpath in trash_entries(root, op):
            mid = _mid_of(opdir / "transport" / relpath) or relpath.rpartition("/")[2]
            msg_rel = _message_rel(relpath, mid)
            if (root / "queue" / msg_rel).exists() and not (
                opdir / "queue" / msg_rel
            ).exists():
                (opdir / "queue" / msg_rel).parent.mkdir(parents=True, exist_ok=True)
                _move(root / "queue" / msg_rel, opdir / "queue" / msg_rel)
                fixed += 1
    return fixed


def list_trash(root: Path) -> list[tuple[str, float, int]]:
    """(op, mtime, messages) of every operation with messages in the trash."""
    top = root / TRASH_DIR
    if not top.is_dir():
        return []
    out = []
    for opdir in sorted(top.iterdir()):
        if opdir.is_dir() and not (opdir / _UNDONE).exists():
            n = sum(1 for _ in trash_entries(root, opdir.name))
            out.append((opdir.name, opdir.stat().st_mtime, n))
    return out


def purge_trash(root: Path, older_than: float) -> list[str]:
    """Remove operations whose trash directory is older than ``older_than`` (epoch)."""
    top = root / TRASH_DIR
    gone: list[str] = []
    if not top.is_dir():
        return gone
    for opdir in top.iterdir():
        if opdir.is_dir() and opdir.stat().st_mtime < older_than:
            shutil.rmtree(opdir, ignore_errors=True)
            gone.append(opdir.name)
    return gone

"""What ``mailq`` reads from the local postoffice: spool status (``-s``), control files
for ``-v``, and the scheduler's counter block (``-M``).  See docs/client.md."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from mailq.client.errors import EX_OK, EX_UNAVAILABLE
from mailq.client.output import LocalMessage, SpoolStatus, render_status
from mailq.client.parse import parse_counters
from mailq.client.sink import Sink
from spool.counterfile import read_counters
from spool.errors import SpoolError
from spool.procs import pid_alive

__all__ = [
    "count_entries",
    "local_lookup",
    "print_local_counters",
    "print_status",
    "spool_status",
]


def count_entries(directory: Path) -> int:
    """Names starting with a digit, following one-letter ``A``-``Z`` hash directories."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    total = 0
    for entry in entries:
        name = entry.name
        if name[:1].isdigit():
            total += 1
        elif len(name) == 1 and "A" <= name <= "Z" and entry.is_dir():
            total += count_entries(Path(entry.path))
    return total


def _pid_alive(pidfile: Path) -> bool | None:
    """None: no pid file; else whether the process in it exists."""
    try:
        pid = int(pidfile.read_text().split()[0])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, IndexError):
        return False
    return pid_alive(pid)


def spool_status(po: str) -> SpoolStatus:
    root = Path(po)
    routed = count_entries(root / "router")
    transport = count_entries(root / "transport")
    router_alive = _pid_alive(root / ".pid.router")
    sched_alive = _pid_alive(root / ".pid.scheduler")
    if router_alive is None:
        router_state = "never started"
    elif router_alive:
        router_state = "processing" if routed else "idle"
    else:
        router_state = (
            "core dumped" if (root / "router" / "core").exists() else "no daemon"
        )
    if sched_alive is None:
        sched_state = "never started"
    elif sched_alive:
        sched_state = "working" if transport else "idle"
    else:
        sched_state = "no scheduler daemon"
    if (root / "transport" / "core").exists():
        sched_state += " (core exists)"
    return SpoolStatus(
        postoffice=po,
        router_count=routed,
        router_state=router_state,
        deferred_count=count_entries(root / "deferred"),
        transport_count=transport,
        transport_state=sched_state,
        queue_count=count_entries(root / "queue"),
    )


def local_lookup(po: str) -> Callable[[str], LocalMessage | None]:
    """Read ``transport/<path>`` and stat ``queue/<path>``; None if either fails."""

    def lookup(path: str) -> LocalMessage | None:
        if path.startswith("/") or ".." in path.split("/"):
            return None
        try:
            control = (Path(po) / "transport" / path).read_bytes()
            st = (Path(po) / "queue" / path).stat()
        except OSError:
            return None
        return LocalMessage(control, st.st_size, int(st.st_mtime))

    return lookup


def print_status(postoffice: str, sink: Sink) -> None:
    """``-s``: the spool status lines (or one JSON object)."""
    st = spool_status(postoffice)
    if sink.as_json:
        sink.obj({"type": "status", "server": "", **asdict(st)})
        return
    sink.out("".join(render_status(st)))


def print_local_counters(
    postoffice: str, zenv: dict[str, str], now: int, sink: Sink
) -> int:
    """``-M``: the counter file, read locally (never created or written): ZENV
    ``SNMPSHAREDFILE`` (ZMailer's own block, which our daemon shares), else
    ``$POSTOFFICE/.mailq-spool.counters`` (the daemon's file when ZENV names none).

    Returns the exit status."""
    shared = zenv.get("SNMPSHAREDFILE")
    path = Path(shared) if shared else Path(postoffice) / ".mailq-spool.counters"
    if not path.is_file():
        message = (
            f"{sink.argv0}: no counter file {path} (is the scheduler running here?)"
        )
        sink.error("counters", message, EX_UNAVAILABLE)
        return EX_UNAVAILABLE
    try:
        with read_counters(str(path)) as block:
            lines = block.dump(now)
    except (OSError, ValueError, SpoolError) as exc:
        message = f"{sink.argv0}: cannot read counter file {path}: {exc}"
        sink.error("counters", message, EX_UNAVAILABLE)
        return EX_UNAVAILABLE
    if sink.as_json:
        counters = parse_counters(lines)
        sink.obj({"type": "counters", "server": "local", "counters": counters})
    else:
        sink.out("".join(line + "\n" for line in lines))
    return EX_OK

"""The postoffice directory tree (MQ2-REF 12.1) and the paths inside it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DIRS", "Postoffice", "init_postoffice"]

DIRS: dict[str, int] = {
    "router": 0o755,
    "queue": 0o755,
    "transport": 0o755,
    "deferred": 0o755,
    "freezer": 0o700,
    "public": 0o755,
    "postman": 0o700,
}
"""The directories of a postoffice and the modes ``init_postoffice`` gives them."""


@dataclass(frozen=True, slots=True)
class Postoffice:
    """Paths of one postoffice (``$POSTOFFICE``)."""

    root: Path
    transport_dir: str
    queue_dir: str

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root))
        # str forms for per-message hot paths (a pathlib join costs microseconds)
        object.__setattr__(self, "transport_dir", os.fspath(self.root / "transport"))
        object.__setattr__(self, "queue_dir", os.fspath(self.root / "queue"))

    @property
    def transport(self) -> Path:
        return self.root / "transport"

    @property
    def queue(self) -> Path:
        return self.root / "queue"

    @property
    def router(self) -> Path:
        return self.root / "router"

    @property
    def deferred(self) -> Path:
        return self.root / "deferred"

    @property
    def freezer(self) -> Path:
        return self.root / "freezer"

    @property
    def public(self) -> Path:
        return self.root / "public"

    @property
    def postman(self) -> Path:
        return self.root / "postman"

    @property
    def notify_socket(self) -> Path:
        """The scheduler's default ``NEW`` datagram socket (SCHED-REF 3.5)."""
        return self.root / ".scheduler.notify"

    @property
    def pid_file(self) -> Path:
        return self.root / ".pid.scheduler"

    def control_path(self, relpath: str) -> Path:
        """``transport/<relpath>`` (``relpath`` like ``Q/I/123456``)."""
        return self.transport / relpath

    def message_path(self, relpath: str, mid: str | None = None) -> Path:
        """``queue/<hashprefix><mid>``: the same hash prefix as ``relpath``; ``mid`` (the
        control file's ``i`` line) defaults to the name in ``relpath``."""
        prefix, _, name = relpath.rpartition("/")
        name = mid if mid is not None else name
        return self.queue / (prefix + "/" + name if prefix else name)

    def relpath_of(self, control: Path) -> str:
        """The inverse of :meth:`control_path`."""
        return control.relative_to(self.transport).as_posix()


def init_postoffice(root: str | os.PathLike[str]) -> Postoffice:
    """Create the postoffice directories (0755; ``freezer``/``postman`` 0700).

    Existing directories are kept as they are (their modes are not changed).
    """
    po = Postoffice(root)
    po.root.mkdir(parents=True, exist_ok=True)
    for name, mode in DIRS.items():
        path = po.root / name
        try:
            path.mkdir(mode=mode)
        except FileExistsError:
            if not path.is_dir():
                raise
            continue
        os.chmod(path, mode)  # mkdir's mode is filtered by the umask
    return po

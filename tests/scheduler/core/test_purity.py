"""The decision core imports no asyncio, no processes and no file-system helpers.

It is imported in a fresh interpreter; whatever that interpreter loads at start-up
(``site``, the editable-install hook) is subtracted, so only what the core pulls in counts.
"""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = (
    "asyncio",
    "subprocess",
    "multiprocessing",
    "concurrent.futures",
    "socket",
    "selectors",
    "signal",
    "mmap",
    "tempfile",
    "shutil",
    "fcntl",
    "mailq",
    "scheduler.daemon",
    "scheduler.ta",
    "scheduler.demo",
    "spool.store",
    "spool.submit",
    "spool.scan",
    "spool.locking",
    "spool.counters",
    "spool.dsnpass",
)

PROBE = """
import importlib, json, pkgutil, sys
before = set(sys.modules)
import scheduler.core as core
for info in pkgutil.iter_modules(core.__path__):
    importlib.import_module("scheduler.core." + info.name)
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def loaded_by_core() -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True
    ).stdout
    loaded: list[str] = json.loads(out)
    return loaded


def test_the_core_loads_nothing_forbidden() -> None:
    loaded = loaded_by_core()
    assert "scheduler.core.scheduler" in loaded  # the probe really imported the core
    bad = [m for m in loaded if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    assert bad == []

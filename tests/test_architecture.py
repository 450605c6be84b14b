"""The floor plan: which sub-package may import which (docs/index.md, "The map").

Every ``import`` and ``from ... import`` of every module is read with :mod:`ast`, including
the ones inside functions and under ``TYPE_CHECKING``: an arrow drawn only for the type
checker is still an arrow a reader has to follow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("spool", "mailq", "scheduler")

# Each layer (the longest matching prefix wins) and the layers it may import. A module may
# always import its own layer.
ALLOWED: dict[str, set[str]] = {
    "spool": set(),
    "mailq": {"mailq.client"},  # the root: __version__, and ``python -m mailq``
    "mailq.protocol": {"spool", "mailq"},
    "mailq.server": {"spool", "mailq", "mailq.protocol"},
    "mailq.client": {"spool", "mailq", "mailq.protocol"},
    "scheduler": {"scheduler.daemon"},  # the root: ``python -m scheduler``
    "scheduler.errors": set(),
    "scheduler.lifeline": set(),  # children that end with their parent (daemon, demo)
    "scheduler.config": {"spool", "scheduler.errors"},
    "scheduler.core": {"spool", "scheduler.errors", "scheduler.config"},
    "scheduler.ta": {"spool", "scheduler.errors"},
    "scheduler.demo": {"spool", "scheduler.errors", "scheduler.lifeline"},
    "scheduler.daemon": {
        "spool",
        "scheduler",
        "scheduler.errors",
        "scheduler.lifeline",
        "scheduler.config",
        "scheduler.core",
        "scheduler.demo",
        "mailq",
        "mailq.protocol",
        "mailq.server",
    },
}


def layer_of(module: str) -> str:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in ALLOWED:
            return prefix
    raise AssertionError(f"{module} belongs to no layer: add it to ALLOWED")


def module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every project import in the file."""
    name, is_package = module_name(path)
    return imports_in(path.read_text(), name, is_package)


def imports_in(source: str, name: str, is_package: bool) -> list[tuple[int, str]]:
    package = name if is_package else name.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            # ``from pkg import sub`` names the sub-module when there is one
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                sub_path = ROOT / sub.replace(".", "/")
                is_module = sub_path.with_suffix(".py").is_file() or sub_path.is_dir()
                found.append((node.lineno, sub if is_module else target))
    return sorted((line, m) for line, m in found if m.split(".")[0] in PACKAGES)


def all_modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_every_import_runs_one_way() -> None:
    wrong = []
    for path in all_modules():
        source = layer_of(module_name(path)[0])
        for line, target in imported_modules(path):
            dest = layer_of(target)
            if dest != source and dest not in ALLOWED[source]:
                rel = path.relative_to(ROOT)
                wrong.append(f"{rel}:{line}: {source} may not import {target}")
    assert wrong == []


def test_the_walk_sees_lazy_relative_and_typing_imports() -> None:
    """The checker itself: the imports a reader could miss are all found."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from mailq.server.views import QueueView\n"
        "def f():\n"
        "    from scheduler.core import model\n"
        "from . import ids\n"
        "from .daemon import runner\n"
    )
    assert imports_in(source, "spool.x", is_package=False) == [
        (3, "mailq.server.views"),
        (5, "scheduler.core.model"),
        (6, "spool.ids"),
        (7, "spool.daemon"),
    ]
    assert imports_in(source, "scheduler", is_package=True)[3] == (
        7,
        "scheduler.daemon.runner",
    )
    assert layer_of("scheduler.core.model") not in ALLOWED["spool"]


@pytest.mark.parametrize(
    ("module", "layer"),
    [
        ("scheduler.core.retry", "scheduler.core"),
        ("scheduler.daemon.runner", "scheduler.daemon"),
        ("mailq.server.views", "mailq.server"),
        ("mailq.client.cli", "mailq.client"),
        ("mailq", "mailq"),
        ("spool.zenv", "spool"),
    ],
)
def test_layers(module: str, layer: str) -> None:
    assert layer_of(module) == layer

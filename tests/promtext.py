"""A strict parser of the Prometheus text exposition format 0.0.4, for the tests.

It checks what promtool's linter and the Prometheus scraper check that matters here:
every sample belongs to a family announced by ``# HELP`` and ``# TYPE`` lines that come
before it (once each), names and label names are legal, label values are correctly
quoted and escaped, values are numbers, counters end in ``_total``, no series repeats.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


class ParseError(ValueError):
    pass


@dataclass
class MetricFamily:
    name: str
    kind: str = ""
    help: str = ""
    samples: dict[tuple[tuple[str, str], ...], float] = field(default_factory=dict)

    def value(self, **labels: str) -> float:
        return self.samples[tuple(sorted(labels.items()))]


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def _labels(text: str, line: str) -> tuple[tuple[str, str], ...]:
    out: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        m = LABEL.match(text, pos)
        if m is None:
            raise ParseError(f"bad labels in {line!r}")
        if m.group(1) in out:
            raise ParseError(f"repeated label in {line!r}")
        out[m.group(1)] = _unescape(m.group(2))
        pos = m.end()
        if pos < len(text):
            if text[pos] != ",":
                raise ParseError(f"bad label separator in {line!r}")
            pos += 1
    return tuple(sorted(out.items()))


def _value(text: str, line: str) -> float:
    special = {"+Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}
    if text in special:
        return special[text]
    try:
        return float(text)
    except ValueError:
        raise ParseError(f"bad value in {line!r}") from None


def parse(text: str) -> dict[str, MetricFamily]:
    """The families of ``text`` by name; ParseError for anything malformed."""
    if text and not text.endswith("\n"):
        raise ParseError("the exposition must end with a newline")
    families: dict[str, MetricFamily] = {}
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                if not NAME.fullmatch(name):
                    raise ParseError(f"bad metric name {name!r}")
                fam = families.setdefault(name, MetricFamily(name))
                if fam.samples:
                    raise ParseError(f"{parts[1]} after samples of {name}")
                rest = parts[3] if len(parts) > 3 else ""
                if parts[1] == "TYPE":
                    if fam.kind or rest not in TYPES:
                        raise ParseError(f"bad or repeated TYPE: {line!r}")
                    fam.kind = rest
                else:
                    if fam.help:
                        raise ParseError(f"repeated HELP: {line!r}")
                    fam.help = rest or " "
            continue
        m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)", line)
        if m is None:
            raise ParseError(f"bad sample line {line!r}")
        name = m.group(1)
        found = families.get(name)
        if found is None or not found.kind or not found.help:
            raise ParseError(f"sample of {name} before its HELP and TYPE")
        fam = found
        labels = _labels(m.group(2) or "", line)
        if labels in fam.samples:
            raise ParseError(f"repeated series {line!r}")
        fam.samples[labels] = _value(m.group(3), line)
    for fam in families.values():
        if fam.kind == "counter" and not fam.name.endswith("_total"):
            raise ParseError(f"counter {fam.name} does not end in _total")
        if fam.kind == "counter" and any(v < 0 for v in fam.samples.values()):
            raise ParseError(f"negative counter {fam.name}")
    return families


def promtool_check(text: str) -> tuple[bool, str] | None:
    """``promtool check metrics`` on ``text``: (passed, its output); None without promtool
    (Debian: ``apt-get install prometheus``)."""
    import shutil
    import subprocess

    tool = shutil.which("promtool")
    if tool is None:
        return None
    result = subprocess.run(
        [tool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.returncode == 0, result.stdout + result.stderr

"""Reading a ZMailer ZENV file (``zmailer.conf``): ``NAME=value`` lines.

Blank lines and ``#`` comments are skipped, one pair of surrounding double or single
quotes is removed, and ``${NAME}``/``$NAME`` refer to names defined earlier in the file.
Only the few names the client needs are used (``POSTOFFICE``, ``MAILSERVER``,
``SNMPSHAREDFILE``).
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["DEFAULT_ZCONFIG", "parse_zenv", "read_zenv"]

DEFAULT_ZCONFIG = "/etc/mail/zmailer.conf"
_REF = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def parse_zenv(text: str) -> dict[str, str]:
    """Pure: the variables of a ZENV file's text."""
    env: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        name = name.strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        env[name] = _REF.sub(lambda m: env.get(m.group(1) or m.group(2), ""), value)
    return env


def read_zenv(path: str | Path) -> dict[str, str]:
    """Read a ZENV file; raises ``OSError`` when it cannot be read."""
    return parse_zenv(Path(path).read_text(encoding="utf-8", errors="surrogateescape"))

"""ZENV: ZMailer's ``zmailer.conf`` (``KEY=VALUE`` lines) and ``${NAME}`` expansion.

The file is read once; environment variables of the same names override its values,
so ``POSTOFFICE=/tmp/po mailq-scheduler ...`` works as it does with ZMailer.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping

__all__ = ["DEFAULT_ZCONFIG", "ZENV_NAMES", "expand", "parse_zenv", "read_zenv"]

log = logging.getLogger(__name__)

DEFAULT_ZCONFIG = "/etc/zmailer/zmailer.conf"

#: Names that an environment variable may override (besides any name in the file).
ZENV_NAMES = (
    "ZCONFIG",
    "POSTOFFICE",
    "MAILBIN",
    "MAILSHARE",
    "MAILVAR",
    "MAILBOX",
    "LOGDIR",
    "SCHEDULERNOTIFY",
    "SCHEDULERDIRHASH",
    "SNMPSHAREDFILE",
    "RENDEZVOUS",
    "SYSLOGFLG",
    "BINDADDR",
    "SCHEDULER_M_EXTRA",
)

_LINE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$")
_REF = re.compile(r"\$\{([^}]*)\}")


def expand(text: str, zenv: Mapping[str, str]) -> str:
    """Replace every ``${NAME}`` by its ZENV value; unknown names are left as written."""
    return _REF.sub(lambda m: zenv.get(m.group(1), m.group(0)), text)


def parse_zenv(text: str) -> dict[str, str]:
    """Parse ``zmailer.conf`` text: ``KEY=VALUE`` lines, ``#`` comments, optional quotes.

    ``${NAME}`` in a value is expanded from the names defined on earlier lines; lines
    that are not assignments are ignored (as ZMailer's ``getzenv`` does).
    """
    env: dict[str, str] = {}
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        m = _LINE.match(raw)
        if m is None:
            continue
        env[m.group(1)] = expand(_unquote(m.group(2).strip()), env)
    return env


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def read_zenv(
    path: str | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Read ZENV from ``path`` (None: ``$ZCONFIG``, else the default file if readable).

    Environment variables named in :data:`ZENV_NAMES`, or defined in the file, override
    the file's values.  A missing implicit file gives just the environment overrides; an
    explicit ``path`` that cannot be read raises ``OSError``.
    """
    env_in = os.environ if environ is None else environ
    explicit = path is not None
    if path is None:
        path = env_in.get("ZCONFIG") or DEFAULT_ZCONFIG
    zenv: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            zenv = parse_zenv(f.read())
    except OSError as e:
        if explicit:
            raise
        log.debug("no ZENV file %s: %s", path, e)
    for name in (*ZENV_NAMES, *zenv):
        if name in env_in:
            zenv[name] = env_in[name]
    return zenv

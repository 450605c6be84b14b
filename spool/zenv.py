"""ZENV: ZMailer's ``zmailer.conf`` (``KEY=VALUE`` lines) and ``${NAME}`` expansion.

The file is read once; environment variables of the same names override its values,
so ``POSTOFFICE=/tmp/po mailq-scheduler ...`` works as it does with ZMailer.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence

__all__ = [
    "DEFAULT_ZCONFIG",
    "DEFAULT_ZCONFIGS",
    "ZENV_NAMES",
    "expand",
    "parse_zenv",
    "read_zenv",
    "zconfig_path",
]

log = logging.getLogger(__name__)

#: ZMailer's two usual compiled-in ZENV files, tried in this order when ``$ZCONFIG`` is
#: not set; the daemon and the ``mailq`` client both use the first readable one.
DEFAULT_ZCONFIGS = ("/etc/zmailer/zmailer.conf", "/etc/mail/zmailer.conf")
DEFAULT_ZCONFIG = DEFAULT_ZCONFIGS[0]

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


def zconfig_path(
    environ: Mapping[str, str], defaults: Sequence[str] | None = None
) -> str | None:
    """The implicit ZENV file: ``$ZCONFIG``, else the first readable of ``defaults``
    (None: :data:`DEFAULT_ZCONFIGS`); None when ``$ZCONFIG`` is unset and none is."""
    named = environ.get("ZCONFIG")
    if named:
        return named
    candidates = DEFAULT_ZCONFIGS if defaults is None else defaults
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.R_OK):
            return candidate
    return None


def read_zenv(
    path: str | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    defaults: Sequence[str] | None = None,
) -> dict[str, str]:
    """Read ZENV from ``path`` (None: :func:`zconfig_path` of ``environ`` and ``defaults``).

    Environment variables named in :data:`ZENV_NAMES`, or defined in the file, override
    the file's values.  A missing implicit file gives just the environment overrides; an
    explicit ``path`` that cannot be read raises ``OSError``.
    """
    env_in = os.environ if environ is None else environ
    explicit = path is not None
    if path is None:
        path = zconfig_path(env_in, defaults)
    zenv: dict[str, str] = {}
    if path is None:
        log.debug("no ZENV file: $ZCONFIG unset and no default file readable")
    else:
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

"""The hold conditions of ZMailer's hold channel: when a held address may go on.

The recipient's host field is the condition, ``type:argument``, lower-cased as a whole
(as ZMailer does). :func:`check` answers a :class:`Verdict`:

``timeout:<epoch>``  released once that time has come;
``age:<interval>``   released once the message is that old (``30m``, ``1h30m``, ``90``);
``ns:<name>/<type>`` released once the name server answers (yes or no) a query for
                     ``name`` of ``type`` (a, aaaa, cname, mx, ptr, txt, wks, any); a
                     time-out or SERVFAIL keeps it held; no ``/`` or an unknown type
                     releases at once (ZMailer: "human error, let's be nice");
``io:``              released on one run in ten, at random (retry an I/O error);
``script:<cmd>/<arg>`` released when ``$MAILBIN/bin/<cmd> <arg>`` exits 0, else held with
                     its first line of output;
``home:<user>``      released when the user's home directory is there (or the user or
                     their home is gone: then delivery decides);
and, ours: ``delay:<interval>`` (= ``age:``), ``until:<epoch>`` (= ``timeout:``),
``etrn:<anything>`` (released on any run: configure it ``queueonly``, so only an ETRN
runs it). Any other ``type:`` stays held (ZMailer: unsupported condition, deferred); a
condition without ``:`` is a permanent error, as in ZMailer.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import random
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from scheduler.ta.dns.resolver import DnsTemporary, Resolver
from spool.timefmt import parse_duration

__all__ = ["QTYPES", "Verdict", "check"]

QTYPES = {
    "a": 1,
    "ns": 2,
    "cname": 5,
    "wks": 11,
    "ptr": 12,
    "mx": 15,
    "txt": 16,
    "aaaa": 28,
    "any": 255,
}


@dataclass(frozen=True, slots=True)
class Verdict:
    """``release``; else held (``until`` = release time when known) or ``bad``."""

    release: bool
    text: str = "deferred"
    until: int | None = None
    bad: bool = False


@dataclass(slots=True)
class Environment:
    """What the checks need from the outside (replaceable in tests)."""

    now: int
    arrival: int
    resolver: Resolver | None = None
    zenv: Mapping[str, str] | None = None
    chance: Callable[[], float] = random.random


def check(condition: str, env: Environment) -> Verdict:
    cond = condition.lower()
    kind, colon, arg = cond.partition(":")
    if not colon:
        return Verdict(False, f"invalid hold condition {condition!r}", bad=True)
    try:
        handler = _CHECKS[kind]
    except KeyError:
        return Verdict(False, f"unsupported hold condition {kind!r}")
    try:
        return handler(arg, env)
    except ValueError as exc:
        return Verdict(False, f"bad {kind}: argument: {exc}", bad=True)


def _at(when: int, env: Environment) -> Verdict:
    if env.now >= when:
        return Verdict(True)
    return Verdict(False, until=when)


def _timeout(arg: str, env: Environment) -> Verdict:
    return _at(int(arg.strip() or "0"), env)


def _age(arg: str, env: Environment) -> Verdict:
    return _at(env.arrival + parse_duration(arg), env)


def _etrn(arg: str, env: Environment) -> Verdict:
    return Verdict(True)


def _io(arg: str, env: Environment) -> Verdict:
    return Verdict(env.chance() < 0.1)


def _ns(arg: str, env: Environment) -> Verdict:
    name, slash, qtype = arg.rpartition("/")
    if not slash or qtype not in QTYPES or env.resolver is None:
        return Verdict(True)
    resolver = env.resolver
    try:
        asyncio.run(resolver.query(name.rstrip("."), QTYPES[qtype]))
    except DnsTemporary as exc:
        return Verdict(False, str(exc))
    return Verdict(True)


def _script(arg: str, env: Environment) -> Verdict:
    zenv = env.zenv or {}
    command, _, user = arg.partition("/")
    mailbin = zenv.get("MAILBIN") or "/usr/lib/zmailer"
    run_env = {
        "SHELL": "/bin/sh",
        "PATH": zenv.get("PATH") or "/usr/bin:/bin",
        "HOME": "/tmp",
        "USER": "anonymous",
        "ZCONFIG": zenv.get("ZCONFIG", ""),
        "MAILSHARE": zenv.get("MAILSHARE", mailbin),
        "MAILBIN": mailbin,
    }
    args = ["/bin/sh", os.path.join(mailbin, "bin", command)] + ([user] if user else [])
    try:
        proc = subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=run_env,
            timeout=300,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Verdict(False, f"cannot run {command}: {exc}")
    first = proc.stdout.decode("utf-8", "replace").partition("\n")[0]
    if proc.returncode == 0:
        return Verdict(True)
    tail = (
        f"[exit status {proc.returncode}]"
        if proc.returncode > 0
        else f"[signal {-proc.returncode}]"
    )
    return Verdict(False, f"{first} {tail}".strip())


def _home(arg: str, env: Environment) -> Verdict:
    try:
        pw = pwd.getpwnam(arg)
    except KeyError:
        return Verdict(True)
    if not pw.pw_dir or os.path.isdir(pw.pw_dir):
        return Verdict(True)
    return Verdict(False, f"home directory of {arg} is not available")


_CHECKS: dict[str, Callable[[str, Environment], Verdict]] = {
    "timeout": _timeout,
    "until": _timeout,
    "age": _age,
    "delay": _age,
    "ns": _ns,
    "io": _io,
    "script": _script,
    "home": _home,
    "etrn": _etrn,
}

"""``scheduler.auth``: who may use MAILQ v2, with which rights, from where (MQ2-REF 7).

Format: ``user:plaintext-password:TOKENS:ACL``. Parsing and matching are pure;
:func:`read_auth_file` is the only function that touches the disk, and the server calls
it on every connection and every AUTH, as ZMailer does (nothing is cached).

Differences from ZMailer (see docs/protocol.md):

* tokens split on any whitespace (A9 fix);
* each address literal carries its own ``!`` (A2 fix), and the scanner never reads past
  the end (A3 fix);
* a malformed literal (``[1.2.3.4/24]``, ``[localhost]``, a bad width) never matches and
  is logged as a warning (A1 fix);
* extension: an ACL word ``unix`` admits every Unix-socket peer, ``unix:UID`` or
  ``unix:USERNAME`` only the peer with that uid (SO_PEERCRED). It counts only as a whole
  word (``xunix`` or ``unixes`` is not it); a word starting with ``#`` comments out the
  rest of the ACL field. Without it a Unix-socket peer matches only lines with an empty
  ACL (A4 keep).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import stat
from dataclasses import dataclass, field

from mailq.protocol.commands import Right, token_rights
from mailq.protocol.errors import AuthFileError

__all__ = [
    "AclEntry",
    "AuthEntry",
    "AuthFile",
    "IPPeer",
    "Peer",
    "UnixPeer",
    "admitted",
    "check_auth_file_permissions",
    "parse_acl",
    "parse_auth_file",
    "read_auth_file",
]

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class UnixPeer:
    """A Unix-socket peer; ``uid``/``username`` from SO_PEERCRED when known."""

    uid: int | None = None
    username: str | None = None

    def __str__(self) -> str:
        return "unix" if self.uid is None else f"unix:{self.uid}"


@dataclass(frozen=True, slots=True)
class IPPeer:
    """A TCP peer; a v4-mapped IPv6 address is converted to IPv4."""

    address: IPAddress

    @classmethod
    def from_host(cls, host: str) -> IPPeer:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            return cls(addr.ipv4_mapped)
        return cls(addr)

    def __str__(self) -> str:
        return str(self.address)


Peer = IPPeer | UnixPeer


@dataclass(frozen=True, slots=True)
class AclEntry:
    """One ACL item: a network, or a Unix-peer selector (``unix``, ``unix:x``)."""

    negate: bool
    network: IPNetwork | None = None
    unix: str | None = None  # "" = every Unix peer; else a uid or a user name

    def matches(self, peer: Peer) -> bool:
        if isinstance(peer, UnixPeer):
            if self.unix is None:
                return False
            if self.unix == "":
                return True
            if self.unix.isdigit():
                return peer.uid is not None and int(self.unix) == peer.uid
            return peer.username is not None and self.unix == peer.username
        if self.network is None:
            return False
        return (
            peer.address.version == self.network.version
            and peer.address in self.network
        )


@dataclass(frozen=True, slots=True)
class AuthEntry:
    """One usable line of the auth file."""

    user: str
    password: str = field(repr=False)
    rights: Right
    acl: tuple[AclEntry, ...]
    open_acl: bool  # empty ACL field: every peer, Unix-socket peers included
    line_no: int

    def admits(self, peer: Peer) -> bool:
        """First matching literal decides; ``!`` rejects for this line only."""
        if self.open_acl:
            return True
        for item in self.acl:
            if item.matches(peer):
                return not item.negate
        return False


@dataclass(frozen=True, slots=True)
class AuthFile:
    """The parsed file: lines in file order (lines granting nothing are dropped)."""

    entries: tuple[AuthEntry, ...]

    def admits_any(self, peer: Peer) -> bool:
        """Connect-time check: some line admits the peer (MQ2-REF 4)."""
        return any(e.admits(peer) for e in self.entries)

    def find(self, user: str, peer: Peer) -> AuthEntry | None:
        """First line for ``user`` that admits ``peer`` (A8 keep: only it is tried)."""
        for entry in self.entries:
            if entry.user == user and entry.admits(peer):
                return entry
        return None


_ACL_TOKEN = re.compile(
    r"(?P<neg>!)"
    r"|\[(?P<lit>[^\]]*)\](?:/(?P<width>\d*))?"
    r"|."
)
_ACL_WORD_SPLIT = re.compile(r"[\s,]+")
_UNIX_WORD = re.compile(r"(?P<neg>!?)(?i:unix)(?::(?P<who>[A-Za-z0-9_.-]+))?")
_WARNED: set[str] = set()
_MAX_WARNED = 1024


def _warn_once(message: str) -> None:
    if message in _WARNED:
        logger.debug("%s", message)
        return
    if len(_WARNED) < _MAX_WARNED:
        _WARNED.add(message)
    logger.warning("%s", message)


def _parse_literal(body: str, width: str | None) -> IPNetwork:
    """``a.b.c.d`` or ``IPv6:addr``/``IPv6.addr`` plus an optional width."""
    if body[:5].lower() in ("ipv6:", "ipv6."):
        addr: IPAddress = ipaddress.IPv6Address(body[5:])
    else:
        addr = ipaddress.IPv4Address(body)
    bits = addr.max_prefixlen if width is None else int(width)
    if width == "" or bits > addr.max_prefixlen:
        raise ValueError(f"bad width /{width}")
    return ipaddress.ip_network(f"{addr}/{bits}", strict=False)


def parse_acl(text: str, where: str = "") -> tuple[AclEntry, ...]:
    """Tokenize an ACL field; malformed literals are dropped with a warning (A1).

    The field is split into words on whitespace and commas. A word starting with ``#``
    begins a comment: it and the rest of the field are ignored. ``unix``/``unix:WHO``
    (optionally ``!``-negated) counts only as a whole word, never inside another word
    or a comment; other words are scanned for address literals as ZMailer does.
    """
    items: list[AclEntry] = []
    for word in _ACL_WORD_SPLIT.split(text):
        if not word:
            continue
        if word.startswith("#"):
            break
        unix = _UNIX_WORD.fullmatch(word)
        if unix is not None:
            items.append(
                AclEntry(bool(unix.group("neg")), unix=unix.group("who") or "")
            )
            continue
        found = _literals(word, where)
        if not found and word.strip("!"):
            _warn_once(
                f"{where}ACL word {word!r} is neither a literal nor unix: ignored"
            )
        items.extend(found)
    return tuple(items)


def _literals(word: str, where: str) -> list[AclEntry]:
    """The address literals of one ACL word (``!`` negates the next one)."""
    items: list[AclEntry] = []
    negate = False
    for m in _ACL_TOKEN.finditer(word):
        if m.group("neg"):
            negate = True
        elif m.group("lit") is not None:
            try:
                net = _parse_literal(m.group("lit"), m.group("width"))
            except ValueError as exc:
                _warn_once(
                    f"{where}malformed ACL literal {m.group(0)!r} ignored: {exc}"
                )
            else:
                items.append(AclEntry(negate, network=net))
            negate = False
    return items


def parse_auth_file(text: str, name: str = "scheduler.auth") -> AuthFile:
    """Parse the whole file (pure). Bad lines are skipped with a warning."""
    entries: list[AuthEntry] = []
    for line_no, line in enumerate(text.split("\n"), start=1):
        if not line or line[0] in "#*":
            continue
        parts = line.split(":", 3)
        if len(parts) < 4:
            _warn_once(f"{name}:{line_no}: fewer than three ':' (line skipped)")
            continue
        user, password, tokens, acl = parts
        rights = token_rights(tokens)
        if not rights:
            continue  # a line granting nothing is skipped entirely (MQ2-REF 7.2)
        entries.append(
            AuthEntry(
                user=user,
                password=password,
                rights=rights,
                acl=parse_acl(acl, f"{name}:{line_no}: "),
                open_acl=not acl.strip(" \t\r"),
                line_no=line_no,
            )
        )
    return AuthFile(tuple(entries))


def read_auth_file(path: str | os.PathLike[str]) -> AuthFile:
    """Read and parse ``path``; raise :class:`AuthFileError` if it cannot be read."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise AuthFileError(os.fspath(path), exc.strerror or str(exc)) from exc
    return parse_auth_file(data.decode("utf-8", "surrogateescape"), os.fspath(path))


def check_auth_file_permissions(path: str | os.PathLike[str]) -> list[str]:
    """Warnings about a file that others may read or change (it holds passwords)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return [f"{os.fspath(path)}: cannot stat: {exc.strerror or exc}"]
    warnings: list[str] = []
    mode = stat.S_IMODE(st.st_mode)
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        warnings.append(
            f"{os.fspath(path)}: mode {mode:04o} lets group/others read the plaintext "
            "passwords; chmod 600 it"
        )
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        warnings.append(
            f"{os.fspath(path)}: mode {mode:04o} lets group/others change it; chmod 600 it"
        )
    return warnings


def admitted(auth: AuthFile | None, peer: Peer) -> bool:
    """Whether a peer gets the challenge (a missing file admits nobody)."""
    return auth is not None and auth.admits_any(peer)

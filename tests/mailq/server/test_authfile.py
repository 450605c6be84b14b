"""scheduler.auth parsing and matching (MQ2-REF 7) with the A1/A2/A9 fixes and the unix opt-in."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mailq.protocol.commands import Right
from mailq.protocol.errors import AuthFileError
from mailq.server.authfile import (
    IPPeer,
    UnixPeer,
    check_auth_file_permissions,
    parse_acl,
    parse_auth_file,
    read_auth_file,
)

LOOP = IPPeer.from_host("127.0.0.1")


def test_fields_comments_and_tokens() -> None:
    auth = parse_auth_file(
        "# comment\n* star comment\n\nbad line\n"
        "a:pw:NONE:\nb:p w:SNMP\tQQ  TT:\nc:pw:SMTPIP:\nd:x:ALL:[IPv6:::1]:extra\n"
    )
    assert [e.user for e in auth.entries] == [
        "b",
        "d",
    ]  # NONE/unknown-only lines skipped
    assert (
        auth.entries[0].rights == Right.SNMP | Right.QQ | Right.TT
    )  # A9 fix: TAB splits
    assert auth.entries[0].password == "p w"
    assert "p w" not in repr(auth.entries[0])


@pytest.mark.parametrize(
    ("acl", "peer", "admitted"),
    [
        ("[127.0.0.0]/8", "127.0.0.1", True),
        ("[127.0.0.0]/8", "::ffff:127.0.0.1", True),  # v4-mapped converted
        ("[127.0.0.0]/8", "10.0.0.1", False),
        ("[ipv6.0::1]/128", "::1", True),
        ("[IPv6:2001:db8::]/32", "2001:db8::5", True),
        ("[IPv6:2001:db8::]/32", "127.0.0.1", False),
        ("![10.1.2.3] [10.0.0.0]/8", "10.9.9.9", True),  # A2 fix: own '!' per literal
        ("![10.1.2.3] [10.0.0.0]/8", "10.1.2.3", False),
        ("[1.2.3.4/24]", "9.9.9.9", False),  # A1 fix: malformed never matches
        ("[localhost]", "127.0.0.1", False),
        ("[1.2.3.4]/33", "1.2.3.4", False),
        ("  ", "8.8.8.8", True),  # empty ACL: everybody
    ],
)
def test_acl_matching(acl: str, peer: str, admitted: bool) -> None:
    auth = parse_auth_file(f"u:pw:ALL:{acl}\n")
    assert auth.admits_any(IPPeer.from_host(peer)) is admitted


def test_malformed_literal_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    parse_acl("[999.1.1.1]", "test:1: ")
    assert "malformed ACL literal" in caplog.text


def test_unix_peers() -> None:
    auth = parse_auth_file("a:pw:ALL:[127.0.0.0]/8\nb:pw:ALL:\n")
    assert auth.find("a", UnixPeer(0, "root")) is None  # A4 keep
    assert auth.find("b", UnixPeer(0, "root")) is not None
    ext = parse_auth_file(
        "a:pw:ALL:unix:root\nb:pw:ALL:unix:1000\nc:pw:ALL:UNIX ![1.2.3.4]\n"
    )
    assert ext.find("a", UnixPeer(0, "root")) is not None
    assert ext.find("a", UnixPeer(5, "bob")) is None
    assert ext.find("b", UnixPeer(1000, None)) is not None
    assert ext.find("c", UnixPeer(None, None)) is not None
    assert ext.find("c", LOOP) is None
    assert not parse_auth_file("a:pw:ALL:!unix\n").admits_any(UnixPeer(0, "root"))


def test_first_matching_line_wins() -> None:
    auth = parse_auth_file(
        "u:one:QQ:[10.0.0.0]/8\nu:two:TT:[127.0.0.0]/8\nu:three:ALL:\n"
    )
    entry = auth.find("u", LOOP)
    assert entry is not None
    assert entry.password == "two"  # A8: only this line's password is checked


def test_read_and_permissions(tmp_path: Path) -> None:
    path = tmp_path / "scheduler.auth"
    with pytest.raises(AuthFileError):
        read_auth_file(path)
    path.write_text("u:pw:ALL:\n")
    path.chmod(0o644)
    assert len(check_auth_file_permissions(path)) == 1
    path.chmod(0o666)
    assert len(check_auth_file_permissions(path)) == 2
    path.chmod(0o600)
    assert check_auth_file_permissions(path) == []
    assert read_auth_file(path).entries[0].user == "u"
    assert check_auth_file_permissions(tmp_path / "missing")


@pytest.mark.parametrize(
    ("acl", "admits_unix"),
    [
        ("[127.0.0.1] # unix admins", False),  # a comment is not an ACL word
        ("#unix", False),
        ("[127.0.0.1] xunix", False),  # inside another word
        ("[127.0.0.1] unixes", False),
        ("[127.0.0.1]unix", False),
        ("unix:root#x", False),
        ("[127.0.0.1] unix # others", True),
        ("[127.0.0.1],unix", True),
        ("UNIX:0", True),
    ],
)
def test_unix_is_only_a_whole_acl_word(acl: str, admits_unix: bool) -> None:
    auth = parse_auth_file(f"a:pw:ALL:{acl}\n")
    assert auth.admits_any(UnixPeer(0, "root")) is admits_unix
    assert auth.admits_any(LOOP) is acl.startswith("[127.0.0.1]")


def test_comment_in_acl_ends_the_field() -> None:
    auth = parse_auth_file("a:pw:ALL:[10.0.0.1] # [127.0.0.1]\n")
    assert not auth.admits_any(LOOP)

"""ZENV: zmailer.conf reading, environment overrides, ${NAME} expansion."""

from __future__ import annotations

from pathlib import Path

import pytest

from spool.bindaddr import bind_address
from spool.zenv import (
    DEFAULT_ZCONFIGS,
    expand,
    parse_zenv,
    read_zenv,
    zconfig_path,
)
from tests.recordings import RECORDINGS

REFERENCE = RECORDINGS / "configs/zmailer.conf"


def test_parse_quotes_comments_and_expansion() -> None:
    text = (
        "# comment\n"
        "POSTOFFICE=/var/spool/postoffice\n"
        'SMTPOPTIONS="-sve -l ${LOGDIR}/smtpserver"\n'
        "LOGDIR=/var/log/mail\n"
        "LATER=${LOGDIR}/x\n"
        "not an assignment\n"
        "EMPTY=\n"
        "SINGLE='a b'\n"
    )
    env = parse_zenv(text)
    assert env["POSTOFFICE"] == "/var/spool/postoffice"
    assert env["SMTPOPTIONS"] == "-sve -l ${LOGDIR}/smtpserver"  # LOGDIR not yet known
    assert env["LATER"] == "/var/log/mail/x"
    assert env["EMPTY"] == ""
    assert env["SINGLE"] == "a b"
    assert "not" not in env


def test_expand_leaves_unknown_names() -> None:
    assert expand("${A}/${B}/$A", {"A": "1"}) == "1/${B}/$A"


def test_reference_file() -> None:
    env = read_zenv(str(REFERENCE), environ={})
    assert env["MAILSHARE"] == "/etc/mail"
    assert env["SCHEDULERDIRHASH"] == "2"
    assert env["ROUTEROPTIONS"] == "-dWkn 4"


def test_environment_overrides_file(tmp_path: Path) -> None:
    f = tmp_path / "zmailer.conf"
    f.write_text("POSTOFFICE=/a\nOWN=1\nMAILBIN=/bin\n")
    env = read_zenv(str(f), environ={"POSTOFFICE": "/b", "OWN": "2", "UNRELATED": "x"})
    assert env == {"POSTOFFICE": "/b", "OWN": "2", "MAILBIN": "/bin"}


def test_zconfig_from_environment(tmp_path: Path) -> None:
    f = tmp_path / "z.conf"
    f.write_text("MAILSHARE=/share\n")
    env = read_zenv(environ={"ZCONFIG": str(f)})
    assert env["MAILSHARE"] == "/share"
    assert env["ZCONFIG"] == str(f)


def test_missing_implicit_file_gives_environment_only(tmp_path: Path) -> None:
    env = read_zenv(environ={"ZCONFIG": str(tmp_path / "nope"), "LOGDIR": "/l"})
    assert env == {"ZCONFIG": str(tmp_path / "nope"), "LOGDIR": "/l"}


def test_missing_explicit_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_zenv(str(tmp_path / "nope"), environ={})


def test_default_files_first_readable_wins(tmp_path: Path) -> None:
    missing, second = tmp_path / "zmailer/zmailer.conf", tmp_path / "mail/zmailer.conf"
    second.parent.mkdir()
    second.write_text("POSTOFFICE=/from-second\n")
    defaults = (str(missing), str(second))
    assert zconfig_path({}, defaults) == str(second)
    assert read_zenv(environ={}, defaults=defaults) == {"POSTOFFICE": "/from-second"}
    missing.parent.mkdir()
    missing.write_text("POSTOFFICE=/from-first\n")
    assert read_zenv(environ={}, defaults=defaults) == {"POSTOFFICE": "/from-first"}


def test_zconfig_beats_default_files(tmp_path: Path) -> None:
    default, named = tmp_path / "default.conf", tmp_path / "named.conf"
    default.write_text("POSTOFFICE=/default\n")
    named.write_text("POSTOFFICE=/named\n")
    defaults = (str(default),)
    assert zconfig_path({"ZCONFIG": str(named)}, defaults) == str(named)
    env = read_zenv(environ={"ZCONFIG": str(named)}, defaults=defaults)
    assert env["POSTOFFICE"] == "/named"


def test_no_default_file_readable(tmp_path: Path) -> None:
    defaults = (str(tmp_path / "a.conf"), str(tmp_path))  # missing; a directory
    assert zconfig_path({}, defaults) is None
    assert read_zenv(environ={"LOGDIR": "/l"}, defaults=defaults) == {"LOGDIR": "/l"}


def test_the_two_usual_defaults_in_order() -> None:
    assert DEFAULT_ZCONFIGS == ("/etc/zmailer/zmailer.conf", "/etc/mail/zmailer.conf")


# --- BINDADDR (issue 12 item 6) -------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("", None),
        (None, None),
        ("any", None),
        ("ANY6", None),
        ("[127.0.0.1]", "127.0.0.1"),
        ("[ipv6 ::1]", "::1"),
        ("[IPv6:::1]", "::1"),
        ("[ipv6.::1]", "::1"),
        ("iface:lo", "127.0.0.1"),
        ("iface:v4:lo", "127.0.0.1"),
    ],
)
def test_bind_address(value: str | None, address: str | None) -> None:
    assert bind_address(value) == address


@pytest.mark.parametrize(
    "value", ["[999.1.1.1]", "eth0", "[ipv6 127.0.0.1]", "127.0.0.1", "iface:no-such0"]
)
def test_bind_address_that_names_no_address_is_an_error(value: str) -> None:
    with pytest.raises(ValueError, match="BINDADDR"):
        bind_address(value)

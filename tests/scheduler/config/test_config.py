"""scheduler.conf: lexer, inheritance, matching, errors, TA command lines (SCHED-REF 1)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

import scheduler.ta
from scheduler.config import clauses as config_mod
from scheduler.config.clauses import (
    Clause,
    SchedulerConfig,
    default_config,
    expand_command,
    fallback_clause,
    format_effective,
    load_config,
    parse_config,
)
from scheduler.errors import ConfigError
from tests.recordings import RECORDINGS

CONFIGS = RECORDINGS / "configs"
ZENV = {"MAILSHARE": "/etc/mail", "MAILBIN": "/usr/lib/zmailer", "POSTOFFICE": "/po"}


def parse(text: str) -> SchedulerConfig:
    return parse_config(text, "t.conf", ZENV)


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return [str(p) for p in info.value.problems]


def warnings_of(text: str) -> list[str]:
    return [str(w) for w in parse(text).warnings]


def clause(cfg: SchedulerConfig, selector: str) -> Clause:
    (found,) = [c for c in cfg.clauses if c.selector == selector]
    return found


# --- the recorded configurations -----------------------------------------------------------


def test_recorded_scheduler_conf_values() -> None:
    cfg = load_config(str(CONFIGS / "scheduler.conf"), ZENV)
    smtp = cfg.match("smtp", "mx.example.com")
    assert smtp is not None
    assert smtp.selector == "smtp/*"
    assert (smtp.interval, smtp.retries) == (60, (1, 1, 2, 3, 5, 8, 13, 21, 34))
    assert (smtp.maxring, smtp.maxchannel, smtp.overfeed, smtp.skew) == (
        50,
        199,
        150,
        5,
    )
    assert (smtp.expiry, smtp.expiry2, smtp.idlemax) == (5 * 86400, 2 * 86400, 240)
    assert (smtp.maxta, smtp.maxthr, smtp.uid, smtp.gid) == (10000, 1, 0, 1)
    assert smtp.line == 40
    assert smtp.file == str(CONFIGS / "scheduler.conf")
    assert not smtp.withhost
    assert not smtp.queueonly
    etrn = cfg.match("smtp-etrn", "etrn.example.com")
    assert etrn is not None
    assert (etrn.selector, etrn.queueonly, etrn.interval, etrn.retries) == (
        "smtp-etrn/*",
        True,
        3600,
        (12,),
    )
    local = cfg.match("local", "postmaster")
    assert local is not None
    assert (local.interval, local.idlemax, local.maxring, local.queueonly) == (
        300,
        540,
        5,
        True,
    )
    assert cfg.params.authfile == "/etc/mail/scheduler.auth"
    assert cfg.params.mailqsock == ("TCP:174",)
    assert cfg.match("uucp", "x") is None
    assert cfg.warnings == ()


@pytest.mark.parametrize("name", ["scheduler-unix.conf", "scheduler-timing.conf"])
def test_other_recorded_configs_load(name: str) -> None:
    cfg = load_config(str(CONFIGS / name), ZENV)
    assert [c.selector for c in cfg.clauses] == [
        "local/*",
        "smtp-etrn/*",
        "smtp/*",
        "error/*",
    ]


def test_unix_socket_param() -> None:
    cfg = load_config(str(CONFIGS / "scheduler-unix.conf"), ZENV)
    assert cfg.params.mailqsock == ("UNIX:/var/spool/postoffice/.mailq.sock",)


def test_timing_config_smtp_is_queueonly() -> None:
    cfg = load_config(str(CONFIGS / "scheduler-timing.conf"), ZENV)
    assert all(c.queueonly for c in cfg.clauses)


# --- the built-in default (shipped proto) ----------------------------------------------


def test_default_config_is_the_proto() -> None:
    cfg = default_config(ZENV)
    assert cfg.params.authfile == "/etc/mail/scheduler.auth"
    d = cfg.default
    assert (d.interval, d.idlemax, d.expiry, d.expiry2) == (60, 240, 432000, 172800)
    assert (d.maxchannel, d.maxring, d.maxta, d.overfeed) == (10000, 20, 10000, 150)
    smtp = cfg.match("smtp", "mx.example.com")
    assert smtp is not None
    assert (smtp.selector, smtp.interval, smtp.maxring, smtp.maxchannel) == (
        "smtp/*",
        60,
        50,
        199,
    )
    assert smtp.argv == ("smtp", "-s")


@pytest.mark.parametrize(
    ("channel", "host", "selector"),
    [
        ("smtp", "a-gw.funet.fi", "smtp/*-gw.funet.fi"),
        ("smtp", "mail.example.se", "smtp/*.{se,dk,is,no}"),
        ("smtp", "mail.example.no", "smtp/*.{se,dk,is,no}"),
        ("smtp", "mail.example.fi", "smtp/*.fi"),
        ("smtp", "mail.example.com", "smtp/*"),
        ("local", "file.x", "local/file*"),
        ("local", "pipe.x", "local/pipe*"),
        ("local", "bob", "local/*"),
        ("smtp-etrn", "x", "smtp-etrn/*"),
        ("SMTP", "MAIL.Example.SE", "smtp/*.{se,dk,is,no}"),  # names are lower-cased
    ],
)
def test_first_match_in_file_order(channel: str, host: str, selector: str) -> None:
    found = default_config(ZENV).match(channel, host)
    assert found is not None
    assert found.selector == selector


def test_empty_clause_takes_next_clause_values_but_stays_separate() -> None:
    cfg = default_config(ZENV)
    file_, pipe = clause(cfg, "local/file*"), clause(cfg, "local/pipe*")
    assert file_ is not pipe
    assert file_.argv == pipe.argv == ("mailbox", "-8")
    assert (file_.interval, file_.idlemax, file_.maxchannel, file_.maxring) == (
        300,
        540,
        15,
        5,
    )


# --- lexical rules ---------------------------------------------------------------------


def test_column_rule_same_line_parameters() -> None:
    cfg = parse("a/*\tinterval=10s maxring=3\n")
    assert (clause(cfg, "a/*").interval, clause(cfg, "a/*").maxring) == (10, 3)


def test_column_zero_word_starts_a_clause() -> None:
    cfg = parse("a/*\tmaxring=3\ninterval=5m\n")
    assert [c.selector for c in cfg.clauses] == ["a/*", "interval=5m"]
    assert clause(cfg, "a/*").interval == 3600
    assert any("column 0" in w for w in warnings_of("a/*\tmaxring=3\ninterval=5m\n"))


def test_selector_without_slash_has_host_star() -> None:
    c = parse("smtp maxring=2\n").clauses[0]
    assert (c.channel_pattern, c.host_pattern) == ("smtp", "*")


def test_blanks_around_equals_and_case_insensitive_keywords() -> None:
    c = parse("a/*\n  Interval = 5m\n  MAXRINGS=7 QUEUEONLY\n").clauses[0]
    assert (c.interval, c.maxring, c.queueonly) == (300, 7, True)


def test_comments_and_hash_inside_unquoted_values() -> None:
    text = (
        "# a comment\n"
        "a/*  # comment after selector\n"
        "\tcommand=prog#1 # trailing comment\n"
        "\t# indented comment\n"
        "\n"
        "\tmaxring=4#\n"
    )
    errs = errors_of(text)
    assert errs == ["t.conf:6: bad value maxring='4#': an integer is expected"]
    c = parse(text.replace("maxring=4#", "maxring=4")).clauses[0]
    assert c.command == "prog#1"


def test_quoted_values_keep_backslashes_and_join_lines() -> None:
    text = 'a/*\tcommand="prog \\x -a\\\n   -b"\n\tmaxring=2\n'
    c = parse(text).clauses[0]
    assert c.command == "prog \\x -a   -b"
    assert c.argv == ("prog", "\\x", "-a", "-b")
    assert c.maxring == 2


def test_missing_end_quote_and_bad_continuation() -> None:
    assert errors_of('a/*\n\tcommand="prog -a\n\tmaxring=2\n') == [
        't.conf:2: missing end-quote in: \tcommand="prog -a'
    ]
    assert errors_of('a/*\n\tcommand="prog -a\\\n') == [
        "t.conf:2: bad continuation line (end of file)"
    ]


def test_crlf_line_ends() -> None:
    c = parse("a/*\r\n\tmaxring=2\r\n\tcommand=x\r\n").clauses[0]
    assert (c.maxring, c.command) == (2, "x")


# --- PARAM lines -----------------------------------------------------------------------


def test_param_lines_any_case_and_expansion() -> None:
    cfg = parse(
        'paramAuthFile = "${MAILSHARE}/auth"\n'
        "PARAMmailqsock=UNIX:${POSTOFFICE}/.mailq.sock\n"
        'PARAMMAILQSOCK = "TCP:1174"\n'
        "PARAMnotifysock = ${NOPE}/n\n"
        "PARAMglobal-report-interval = 15m\n"
        "PARAMmsgwriteasync = 1\n"
        "PARAMstore-error-on-error = 0\n"
    )
    p = cfg.params
    assert p.authfile == "/etc/mail/auth"
    assert p.mailqsock == ("UNIX:/po/.mailq.sock", "TCP:1174")
    assert p.notifysock == "${NOPE}/n"
    assert p.global_report_interval == 900
    assert (p.msgwriteasync, p.store_error_on_error) == (True, False)


def test_param_line_does_not_end_the_clause() -> None:
    c = parse("a/*\tmaxring=2\nPARAMauthfile = /x\n\tmaxchannel=3\n").clauses[0]
    assert (c.maxring, c.maxchannel) == (2, 3)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("PARAM authfile=/x", "illegal syntax (PARAM needs a name right after PARAM)"),
        ("PARAMfoo = 1", "illegal syntax (unknown PARAMfoo)"),
        ("PARAMauthfile", "illegal syntax (PARAMauthfile without '= value')"),
        ("PARAMauthfile =", "illegal syntax (PARAMauthfile without a value)"),
    ],
)
def test_param_errors(line: str, message: str) -> None:
    assert errors_of(f"a/* maxring=1\n{line}\n") == [f"t.conf:2: {message}"]


# --- inheritance ---------------------------------------------------------------------


def test_default_clause_snapshot_rule() -> None:
    cfg = parse(
        "early/* maxring=1\n"
        "*/*\tinterval=1m maxchannel=7\n"
        "mid/* maxring=2\n"
        "*/*\tinterval=2m\n"  # a second */* edits the same default, later clauses only
        "late/* maxring=3\n"
    )
    early, mid, late = cfg.clauses
    assert (early.interval, early.maxchannel) == (3600, 10000)  # compiled defaults
    assert (mid.interval, mid.maxchannel) == (60, 7)
    assert (late.interval, late.maxchannel) == (120, 7)
    assert cfg.default.interval == 120
    assert cfg.default.line == 2


def test_empty_clause_does_not_take_skew_or_reporttimes() -> None:
    cfg = parse(
        '*/*\tskew=3 reporttimes="1h"\n'
        "a/*\n"
        "b/*\n"
        '\tskew=1 reporttimes="2h" interval=5m command="x -y" queueonly\n'
    )
    a, b = cfg.clauses
    assert (a.interval, a.command, a.queueonly) == (300, "x -y", True)
    assert (a.skew, a.reporttimes) == (3, (3600,))
    assert (b.skew, b.reporttimes) == (1, (7200,))


def test_trailing_empty_clause_keeps_defaults_and_is_warned() -> None:
    text = "*/* interval=2m command=x\na/*\n"
    assert clause(parse(text), "a/*").interval == 120
    assert warnings_of(text) == [
        "t.conf:2: clause 'a/*' has no parameters and no later clause gives it any:"
        " it keeps the default values"
    ]


def test_resolution_of_unset_and_nonpositive_values() -> None:
    c = parse(
        "a/* maxta=0 maxchannel=-1 maxring=0 maxthr=0 overfeed=-5 interval=10s\n"
    ).clauses[0]
    assert (c.maxta, c.maxchannel, c.maxring, c.maxthr, c.overfeed) == (
        10000,
        10000,
        10000,
        1,
        0,
    )
    assert c.idlemax == 30  # unset -> 3 x interval (S13 fixed)
    assert (c.expiry, c.expiry2, c.uid, c.gid, c.priority) == (0, 0, None, None, None)


# --- values --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds", "warned"),
    [
        ("90", 90, False),
        ("5m", 300, False),
        ("1h30m", 5400, True),  # S1: ZMailer read 3600
        ("1d12h", 129600, True),
        ("1h5m20s", 3920, True),
        ("5x", 5, True),
    ],
)
def test_time_values(value: str, seconds: int, warned: bool) -> None:
    text = f"a/* interval={value} command=x\n"
    assert parse(text).clauses[0].interval == seconds
    assert bool(warnings_of(text)) is warned


def test_flags_ignore_values_with_a_warning() -> None:
    text = "a/* ageorder=0 wakeuprestartonly bychannel command=x\n"
    c = parse(text).clauses[0]
    assert (c.ageorder, c.wakeuprestartonly) == (True, True)
    assert warnings_of(text) == [
        "t.conf:1: ageorder=0: a value is ignored, the flag is set anyway (S48)"
    ]


def test_aliases_and_users() -> None:
    c = parse(
        "a/* maxtransports=3 maxchannels=4 maxrings=5 user=nobody group=nogroup\n"
    ).clauses[0]
    assert (c.maxta, c.maxchannel, c.maxring) == (3, 4, 5)
    assert (c.uid, c.gid) == (65534, 65534)
    c = parse("a/* maxtransport=6 user=123 group=45\n").clauses[0]
    assert (c.maxta, c.uid, c.gid) == (6, 123, 45)


def test_priority_and_nice_share_storage() -> None:
    assert parse("a/* priority=5 nice=3\n").clauses[0].priority is None
    c = parse("a/* nice=3 priority=5\n").clauses[0]
    assert (c.priority, c.nice) == (5, 0)


def test_system_priorities_are_params() -> None:
    cfg = parse("*/* syspriority=-5 sysnice=2\n")
    assert (cfg.params.syspriority, cfg.params.sysnice) == (-5, 2)


def test_retries_atoi_and_forms() -> None:
    text = 'a/* retries="1 2x 3" deliveryform=d expiryform="e f" command=x\n'
    c = parse(text).clauses[0]
    assert c.retries == (1, 2, 3)
    assert (c.deliveryform, c.expiryform) == ("d", "e f")
    assert warnings_of(text) == ["t.conf:1: retry factor '2x' is read as 2"]


def test_withhost_only_for_a_whole_host_word() -> None:
    assert parse('a/* command="sm -h $host"\n').clauses[0].withhost
    text = 'a/* command="sm -h ${host}"\n'
    assert not parse(text).clauses[0].withhost
    assert "(S11)" in warnings_of(text)[0]


def test_errors_are_all_collected_with_file_and_line() -> None:
    text = (
        "\tmaxring=1\n"
        "a/*\n"
        "\tfoo=1 byhost withhost\n"
        "\tinterval=0 command\n"
        '\tretries="0 1" skew=0\n'
        '\tretries=""\n'
        "\tuser=no-such-user-zz group=no-such-group-zz\n"
        "\tpriority=20 nice=-41\n"
        "\tmaxring=many\n"
        '\treporttimes="1 2 3 4 5"\n'
        '\tcommand="A=1 B=2"\n'
    )
    assert errors_of(text) == [
        "t.conf:1: illegal syntax ('maxring' before the first selector)",
        "t.conf:3: unknown keyword foo",
        "t.conf:3: unknown keyword byhost",
        "t.conf:3: unknown keyword withhost",
        "t.conf:4: bad interval '0': must be > 0 (S8)",
        "t.conf:4: illegal syntax (command needs '=value', S7)",
        "t.conf:5: not a numeric factor: 0",
        "t.conf:5: bad skew value: 0",
        "t.conf:6: empty retry factor list",
        "t.conf:7: unknown user: no-such-user-zz",
        "t.conf:7: unknown group: 'no-such-group-zz'",
        't.conf:8: Bad UNIX priority value, acceptable in range: -20..19; input="20"',
        't.conf:8: Bad UNIX nice offset value, acceptable in range: -40..39; input="-41"',
        "t.conf:9: bad value maxring='many': an integer is expected",
        "t.conf:10: bad reporttimes value: '1 2 3 4 5' (1 to 4 times, each > 0)",
        "t.conf:11: command 'A=1 B=2' has no program (only VAR=value words)",
    ]


def test_config_error_is_a_scheduler_error() -> None:
    from scheduler.errors import SchedulerError

    with pytest.raises(SchedulerError, match=r"t\.conf:1: unknown keyword nope"):
        parse("a/* nope\n")


# --- selectors, S3 and S10 -----------------------------------------------------------


def test_star_selectors_are_the_default_clause() -> None:
    cfg = parse("* interval=2m\n*/* maxring=3\n")
    assert cfg.clauses == ()
    assert (cfg.default.interval, cfg.default.maxring) == (120, 3)


def test_s3_channel_star_never_matches() -> None:
    text = "*/*.example.com command=x\nsmtp/* command=y\n"
    cfg = parse(text)
    found = cfg.match("smtp", "a.example.com")
    assert found is not None
    assert found.selector == "smtp/*"
    assert cfg.match("local", "a.example.com") is None
    assert warnings_of(text)[0].startswith("t.conf:1: clause '*/*.example.com' never")


def test_s10_warnings_and_behaviour() -> None:
    text = "smtp/[^x]* command=a\nsmtp/[a-c]* command=b\nSMTP/* command=c\n"
    cfg = parse(text)
    assert cfg.match("smtp", "bz") is None  # [^x] never matches, [a-c] is a set
    found = cfg.match("smtp", "-z")
    assert found is not None
    assert found.selector == "smtp/[a-c]*"
    assert cfg.match("smtp", "zz") is None  # SMTP/* is upper case
    messages = warnings_of(text)
    assert len(messages) == 3
    assert all("(S10)" in m for m in messages)


def test_host_pattern_empty_matches_anything() -> None:
    found = parse("smtp/ command=x\n").match("smtp", "anything")
    assert found is not None


def test_match_is_cached_and_fallback_has_no_command() -> None:
    cfg = default_config(ZENV)
    first = cfg.match("smtp", "mx.example.com")
    assert cfg.match("smtp", "mx.example.com") is first
    assert cfg.match("nochannel", "x") is None
    assert cfg.match("nochannel", "x") is None
    fb = fallback_clause(cfg)
    assert (fb.command, fb.argv, fb.withhost) == (None, (), False)
    assert (fb.interval, fb.expiry, fb.retries) == (
        cfg.default.interval,
        cfg.default.expiry,
        cfg.default.retries,
    )


# --- TA command lines ----------------------------------------------------------------


def test_expand_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    c = parse(
        'uucp/* command="A=1 X=${channel} nosuchagent -c $channel -h $host'
        ' ${host}:${MAILSHARE}:${UNDEF} $HOSTX"\n'
    ).clauses[0]
    env, argv = expand_command(c, "uucp", "h.example", ZENV)
    assert argv == [
        "/usr/lib/zmailer/ta/nosuchagent",
        "-c",
        "uucp",
        "-h",
        "h.example",
        "h.example:/etc/mail:",
        "$HOSTX",
    ]
    assert env == {
        "A": "1",
        "X": "uucp",
        "TZ": "UTC",
        "POSTOFFICE": "/po",
        "MAILBIN": "/usr/lib/zmailer",
        "MAILSHARE": "/etc/mail",
    }


def test_expand_command_absolute_site_and_builtin_agents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "fakeagent_zz.py").write_text("")
    monkeypatch.setattr(
        scheduler.ta, "__path__", [*scheduler.ta.__path__, str(tmp_path)]
    )
    config_mod._own_agent.cache_clear()
    try:
        cfg = parse(
            'a/* command=/bin/true\nb/* command="builtin:fakeagent_zz -x"\n'
            'c/* command="fakeagent_zz -x"\n'
        )
        assert expand_command(cfg.clauses[0], "a", "h", {})[1] == ["/bin/true"]
        assert expand_command(cfg.clauses[1], "b", "h", {})[1] == [
            sys.executable,
            "-m",
            "scheduler.ta.fakeagent_zz",
            "-x",
        ]
        # a relative name is the site's program even where we have an agent of it
        assert expand_command(cfg.clauses[2], "c", "h", {"MAILBIN": "/zm"})[1] == [
            "/zm/ta/fakeagent_zz",
            "-x",
        ]
    finally:
        config_mod._own_agent.cache_clear()


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        ('"mailbox"', ["/site/bin/ta/mailbox"]),
        ('"smtp -s"', ["/site/bin/ta/smtp", "-s"]),
        ("errormail", ["/site/bin/ta/errormail"]),
        ("hold", ["/site/bin/ta/hold"]),
        ('"A=1 smtp -c $channel"', ["/site/bin/ta/smtp", "-c", "smtp"]),
        ('"builtin:mailbox -8"', [sys.executable, "-m", "scheduler.ta.mailbox", "-8"]),
        ('"builtin:smtp"', [sys.executable, "-m", "scheduler.ta.smtp"]),
    ],
)
def test_relative_commands_run_the_sites_agents(command: str, argv: list[str]) -> None:
    cfg = parse(f"smtp/* command={command}\n")
    assert (
        expand_command(cfg.clauses[0], "smtp", "h", {"MAILBIN": "/site/bin"})[1] == argv
    )


def test_unknown_builtin_agent_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no built-in agent 'nosuch'"):
        parse('a/* command="builtin:nosuch -x"\n')


def test_check_config_says_which_program_each_clause_runs(tmp_path: Path) -> None:
    bin_ = tmp_path / "bin"
    (bin_ / "ta").mkdir(parents=True)
    (bin_ / "ta" / "mailbox").write_text("#!/bin/sh\n")
    (bin_ / "ta" / "mailbox").chmod(0o755)
    cfg = parse(
        'local/* command="mailbox -8"\nsmtp/* command="smtp -s"\n'
        'test/* command="builtin:testta"\n'
        'abs/* command="${MAILBIN}/ta/mailbox -8"\n'
    )
    text = format_effective(cfg, {"MAILBIN": str(bin_)})
    assert f'\tcommand="mailbox -8"\n\t# runs {bin_}/ta/mailbox\n' in text
    assert f"\t# runs {bin_}/ta/smtp  (NOT FOUND or not executable)\n" in text
    assert "\t# runs built-in agent scheduler.ta.testta\n" in text
    assert f'command="${{MAILBIN}}/ta/mailbox -8"\n\t# runs {bin_}/ta/mailbox\n' in text
    assert [c.argv for c in parse(text).clauses] == [c.argv for c in cfg.clauses]


def test_expand_command_without_command_raises() -> None:
    cfg = parse("a/* maxring=1\n")
    with pytest.raises(ConfigError, match="NoCmdDefined"):
        expand_command(cfg.clauses[0], "a", "h", ZENV)


# --- format_effective ------------------------------------------------------------------


def _values(c: Clause) -> Clause:
    return dataclasses.replace(c, line=0, file="")


def test_format_effective_parses_back_to_the_same_values() -> None:
    for cfg in (
        default_config(ZENV),
        load_config(str(CONFIGS / "scheduler.conf"), ZENV),
    ):
        text = format_effective(cfg)
        again = parse_config(text, "again", ZENV)
        assert [_values(c) for c in again.clauses] == [_values(c) for c in cfg.clauses]
        assert _values(again.default) == _values(cfg.default)
        assert again.params == cfg.params
        assert "# <built-in>:5: default clause" in format_effective(
            default_config(ZENV)
        )


@given(
    interval=st.integers(1, 10**7),
    retries=st.lists(st.integers(1, 999), max_size=5),
    maxring=st.integers(-5, 10**6),
    ageorder=st.booleans(),
)
def test_format_effective_round_trip_property(
    interval: int, retries: list[int], maxring: int, ageorder: bool
) -> None:
    r = f'retries="{" ".join(map(str, retries))}"' if retries else ""
    text = f"x/* interval={interval} {r} maxring={maxring} {'ageorder' if ageorder else ''}\n"
    cfg = parse(text)
    again = parse(format_effective(cfg))
    assert _values(again.clauses[0]) == _values(cfg.clauses[0])
    assert cfg.clauses[0].interval == interval


def test_load_config_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path / "missing.conf"), ZENV)
    assert str(info.value.problems[0]).startswith(
        f"{tmp_path}/missing.conf:0: cannot read"
    )


def test_clause_without_command_is_warned() -> None:
    assert warnings_of("a/* maxring=1\n") == [
        "t.conf:1: clause 'a/*' has no command: its threads never run"
        " (pend=ConfBUG:NoCmdDefined!)"
    ]

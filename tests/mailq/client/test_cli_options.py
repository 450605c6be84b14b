"""``mailq`` options, exit codes and the monitoring modes (JSON, --check, --prometheus)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from mailq.client.cli import main, split_credentials, verbosity
from tests.mailq.client.replayserver import (
    TRANSCRIPTS,
    Exchange,
    Script,
    ThreadedReplayServer,
    auth_passwords,
    script_from_log,
)
from tests.promtext import parse, promtool_check

RAW = TRANSCRIPTS / "raw"
NOW = 1795312219.0
ENV = {"ZCONFIG": "/nonexistent", "MAILSERVER": "", "POSTOFFICE": "/nonexistent"}


def exchanges(number: str, *commands: str) -> list[Exchange]:
    """The recorded replies of raw case ``number`` for ``commands``, in that order."""
    recorded = script_from_log(next(RAW.glob(f"{number}-*.log"))).exchanges
    by_command = {e.command: e for e in recorded}
    return [by_command[c] for c in commands]


def run(
    srv: ThreadedReplayServer, *args: str, env: dict[str, str] | None = None
) -> Result:
    return CliRunner().invoke(
        main,
        ["-p", str(srv.port), *args],
        obj={"clock": lambda: NOW},
        env={**ENV, **(env or {})},
        prog_name="mailq",
    )


def objects(result: Result) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines()]


# -- pure option helpers ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("admin/adminpw", ("admin", "adminpw")),
        ("qqonly:qqpw", ("qqonly", "qqpw")),
        ("qqonly,qqpw", ("qqonly", "qqpw")),
        ("a/b:c", ("a", "b:c")),
        ("a:b/c", ("a:b", "c")),
        ("lonely", ("lonely", None)),
    ],
)
def test_split_credentials(spec: str, expected: tuple[str, str | None]) -> None:
    assert split_credentials(spec) == expected


@pytest.mark.parametrize(
    ("args", "level"),
    [
        (["-v"], 1),
        (["-vv"], 2),
        (["-i"], 1),
        (["-vvi"], 2),
        (["-v", "-t"], 0),
        (["-t", "-v"], 1),
        (["-cvt", "-v"], 1),  # -c takes "vt" as its value
        (["-c", "-v"], 0),  # -c takes "-v" as its value
        (["-uuser"], 1),
        (["--json", "-Q"], 0),
    ],
)
def test_verbosity_left_to_right(args: list[str], level: int) -> None:
    assert verbosity(args) == level


# -- usage errors and local modes ---------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "first"),
    [
        (["-X"], "mailq: invalid option -- 'X'"),
        (["-vX"], "mailq: invalid option -- 'X'"),
        (["-K"], "mailq: option requires an argument -- 'K'"),
        (["-r", "x"], "mailq: invalid option -- 'r'"),
        (["--bogus"], "mailq: unrecognized option '--bogus'"),
        (["-p", "no-such-service-x"], "mailq: unknown tcp service 'no-such-service-x'"),
    ],
)
def test_usage_errors_exit_64(args: list[str], first: str) -> None:
    result = CliRunner().invoke(main, args, prog_name="mailq", env=ENV)
    assert result.exit_code == 64
    assert result.stderr.splitlines() == [
        first,
        "Usage: mailq [-46isSvt] [-Z zenvcfgfile] [-cchannel -hhost] [-p#] [host]",
    ]


def test_help_is_long_only() -> None:
    result = CliRunner().invoke(main, ["--help"], prog_name="mailq")
    assert result.exit_code == 0
    assert "-h HOST" in result.stdout


def test_version_on_stderr() -> None:
    result = CliRunner().invoke(main, ["-V"], prog_name="mailq")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert result.stderr.startswith("mailq (zmailer-mailq ")


def test_bad_q_count_does_not_connect() -> None:
    result = CliRunner().invoke(main, ["-QQQQQ", "-p", "1"], prog_name="mailq", env=ENV)
    assert result.stdout == "Bad -Q... command\n"
    assert result.exit_code == 64


def test_local_counters_missing_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["-M", "-P", str(tmp_path)], prog_name="mailq", env=ENV
    )
    assert result.exit_code == 69
    assert f"no counter file {tmp_path}/.mailq-spool.counters" in result.stderr
    assert not (tmp_path / ".mailq-spool.counters").exists()
    assert not (tmp_path / ".zmailer.SNMP.block").exists()


def test_local_counters_dump(tmp_path: Path) -> None:
    counters = pytest.importorskip("spool.counters")
    block = counters.Counters.open(str(tmp_path / ".mailq-spool.counters"))
    block.incr("SC.MQ2Connects", 3)
    result = CliRunner().invoke(
        main,
        ["-M", "-P", str(tmp_path)],
        prog_name="mailq",
        env=ENV,
        obj={"clock": lambda: NOW},
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("ZMailer SHM segment dump; Magic=0x33120006\n")
    assert re.search(r"^SC.MQ2Connects +3$", result.stdout, re.M)
    as_json = CliRunner().invoke(main, ["-M", "--json", "-P", str(tmp_path)], env=ENV)
    (obj,) = objects(as_json)
    assert obj["type"] == "counters"
    assert obj["counters"]["SC.MQ2Connects"] == 3


def test_local_counters_from_zenv_snmpsharedfile(tmp_path: Path) -> None:
    counters = pytest.importorskip("spool.counters")
    shared = tmp_path / "elsewhere.counters"
    with counters.Counters.open(str(shared)) as block:
        block.incr("SC.MQ2Connects", 5)
    zenv = tmp_path / "zmailer.conf"
    zenv.write_text(f"SNMPSHAREDFILE={shared}\n")
    po = tmp_path / "po"
    po.mkdir()
    result = CliRunner().invoke(
        main, ["-M", "-Z", str(zenv), "-P", str(po)], prog_name="mailq", env=ENV
    )
    assert result.exit_code == 0, result.stderr
    assert re.search(r"^SC.MQ2Connects +5$", result.stdout, re.M)


# -- credentials -------------------------------------------------------------------------------


def _auth_script() -> Script:
    return Script(exchanges("13", "SHOW SNMP"), passwords=auth_passwords())


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["-U", "admin/adminpw"], {}),
        ([], {"MAILQ_USER": "admin", "MAILQ_PASSWORD": "adminpw"}),
        (["-U", "admin"], {"MAILQ_PASSWORD": "adminpw"}),
        (["--password-file", "{pwfile}", "-U", "admin"], {}),
        ([], {"MAILQ_USER": "admin", "MAILQ_PASSWORD_FILE": "{pwfile}"}),
    ],
)
def test_credentials_sources(
    args: list[str], env: dict[str, str], tmp_path: Path
) -> None:
    pwfile = tmp_path / "pw"
    pwfile.write_text("adminpw\nignored\n")
    args = [a.format(pwfile=pwfile) for a in args]
    env = {k: v.format(pwfile=pwfile) for k, v in env.items()}
    with ThreadedReplayServer(_auth_script()) as srv:
        result = run(srv, "-QQQ", *args, env=env)
    assert result.exit_code == 0, result.stdout
    assert srv.received[0].startswith("AUTH admin ")
    assert result.stdout.startswith("Kids: 2")


def test_default_login_is_nobody_and_bad_password_exits_77() -> None:
    with ThreadedReplayServer(_auth_script()) as srv:
        ok = run(srv, "-QQQ")
        bad = run(srv, "-QQQ", "-U", "nobody/wrong")
    assert ok.exit_code == 0
    assert srv.received[0].startswith("AUTH nobody ")
    assert bad.exit_code == 77
    assert bad.stdout == (
        "User 'nobody' not accepted to server '127.0.0.1'; err='BAD USER OR PASSWORD'\n"
    )


def test_550_greeting_message_and_exit_77() -> None:
    script = script_from_log(next(RAW.glob("92-*.log")))
    with ThreadedReplayServer(script) as srv:
        result = run(srv, "-Q")
    assert result.exit_code == 77
    assert (
        result.stderr
        == "mailq: server 127.0.0.1 refused access: 550 NO ACCESS FOR YOU\n"
    )


def test_eof_mid_reply_exits_75() -> None:
    script = Script([Exchange("SHOW SNMP", b"+OK until LF.LF\nKids: 1\n", close=True)])
    with ThreadedReplayServer(script) as srv:
        result = run(srv, "-QQQ")
    assert result.exit_code == 75
    assert "middle of a reply" in result.stderr
    assert result.stdout == ""


# -- ETRN and KILL (C8) ------------------------------------------------------------------------


def test_etrn_and_kill_print_the_reply() -> None:
    script = Script(
        exchanges("80", "ETRN example.net") + exchanges("81", "KILL MSG 100004"),
        passwords=auth_passwords(),
    )
    with ThreadedReplayServer(script) as srv:
        result = run(srv, "-U", "admin/adminpw", "-E", "example.net", "-K", "100004")
    assert result.stdout == "+OK; an ETRN started something.\n+OK; KILLed something.\n"
    assert result.exit_code == 0
    assert srv.received[1:] == ["ETRN example.net", "KILL MSG 100004", "QUIT"]


def test_refused_kill_exits_1_and_json_reply() -> None:
    script = Script(exchanges("30", "KILL MSG 100001"))
    with ThreadedReplayServer(script) as srv:
        result = run(srv, "--json", "-K", "100001")
    assert result.exit_code == 1
    assert objects(result) == [
        {
            "type": "reply",
            "server": "127.0.0.1",
            "ok": False,
            "text": "-No KILL allowed for you.",
        }
    ]


# -- JSON ---------------------------------------------------------------------------------


def _default_script() -> Script:
    return script_from_log(next((TRANSCRIPTS / "mailq").glob("50-*.log")))


ENTRY_KEYS = {
    "type": str,
    "server": str,
    "channel": str,
    "host": str,
    "spool": str,
    "index": int,
    "sender": str,
    "offset": int,
    "expiry": int,
    "wakeup": int,
    "lastfeed": int,
    "attempts": int,
    "state": str,
    "diagnostic": str,
}


def test_json_default_mode_schema() -> None:
    with ThreadedReplayServer(_default_script()) as srv:
        result = run(srv, "--json")
    objs = objects(result)
    assert result.exit_code == 0
    assert len(objs) == 8  # one per SHOW THREAD row
    for obj in objs:
        assert set(obj) == set(ENTRY_KEYS)
        for key, kind in ENTRY_KEYS.items():
            assert isinstance(obj[key], kind), key
    assert objs[0]["spool"] == "Y/H/100003"
    assert objs[0]["state"] == "retry in 41s"


def test_json_verbose_adds_local_fields(tmp_path: Path) -> None:
    from tests.mailq.client.test_cli_transcripts import build_postoffice

    po = build_postoffice(tmp_path)
    with ThreadedReplayServer(_default_script()) as srv:
        result = run(srv, "--json", "-v", "-P", str(po))
    objs = objects(result)
    first = objs[0]
    assert first["recipient"] == "grace@example.org"
    assert first["log_id"] == "<100003.zmtest@zmtest.invalid>"
    assert first["size"] == 404 + 327
    assert first["age"] == int(NOW) - 1795311602
    assert {o["recipient"] for o in objs if o["spool"] == "Y/G/100002"} == {
        "erin@example.org",
        "dave@example.net",
        "carol@example.net",
    }


def test_json_threads_short_snmp_counters() -> None:
    def query(number: str, command: str, flag: str) -> list[dict[str, Any]]:
        with ThreadedReplayServer(Script(exchanges(number, command))) as srv:
            return objects(run(srv, "--json", flag))

    threads = query("12", "SHOW QUEUE THREADS2", "-Q")
    short = query("10", "SHOW QUEUE SHORT", "-QQ")
    snmp = query("13", "SHOW SNMP", "-QQQ")
    counters = query("14", "SHOW COUNTERS", "-QQQQ")
    assert threads[0] == {
        "type": "thread",
        "server": "127.0.0.1",
        "channel": "smtp",
        "host": "example.org",
        "N": 2,
        "R": 2,
        "A": 1,
        "W": 44,
        "QA": 2 * 3600 + 2 * 60 + 19,
    }
    assert [o["type"] for o in short] == ["group", "group", "group", "totals"]
    assert short[0]["plim"] == 50
    assert snmp == [
        {
            "type": "snmp",
            "server": "127.0.0.1",
            "kids": 2,
            "idle": 2,
            "messages": 5,
            "threads": 5,
            "vertices": 7,
            "uptime": 14,
            "messages_in": 5,
            "messages_out": 0,
            "messages_stored": 5,
            "recipients_in": 8,
            "recipients_out": 0,
            "recipients_stored": 8,
            "messages_live": None,
            "recipients_live": None,
        }
    ]
    assert counters[0]["type"] == "counters"
    assert counters[0]["counters"]["SC.StoredMessages-G"] == 5


def test_json_errors_go_to_stdout_too() -> None:
    with ThreadedReplayServer(_auth_script()) as srv:
        result = run(srv, "--json", "-QQQ", "-U", "admin/wrong")
    (obj,) = objects(result)
    assert obj["type"] == "error"
    assert obj["error"] == "auth"
    assert obj["exit_code"] == 77
    assert obj["server"] == "127.0.0.1"


# -- --check --------------------------------------------------------------------------------


def _check_script() -> Script:
    return Script(exchanges("13", "SHOW SNMP") + exchanges("12", "SHOW QUEUE THREADS2"))


@pytest.mark.parametrize(
    ("thresholds", "code", "state"),
    [
        ([], 0, "OK"),
        (["--warn-messages", "5"], 0, "OK"),  # 5 is inside 0..5
        (["--warn-messages", "4"], 1, "WARNING"),
        (["--warn-messages", "10:"], 1, "WARNING"),  # below 10
        (["--warn-messages", "~:4", "--crit-recipients", "@8:9"], 2, "CRITICAL"),
        (["--warn-messages", "6", "--crit-recipients", "7"], 2, "CRITICAL"),
        (["--warn-age", "3h"], 1, "WARNING"),
        (["--warn-age", "1h", "--crit-age", "3h1m"], 1, "WARNING"),
        (["--crit-age", "1d"], 0, "OK"),
        (["--crit-age", "@3h:4h"], 2, "CRITICAL"),
    ],
)
def test_check_thresholds(thresholds: list[str], code: int, state: str) -> None:
    with ThreadedReplayServer(_check_script()) as srv:
        result = run(srv, "--check", *thresholds)
    assert result.exit_code == code
    (line,) = result.stdout.splitlines()
    assert line.startswith(f"MAILQ {state} - 5 messages, 8 recipients, oldest 3h14s | ")
    assert "messages=5;" in line
    assert "oldest_age=10814s;" in line
    assert line.endswith(" threads=5;;;0; kids=2;;;0;")


def test_check_perfdata_thresholds_exact() -> None:
    with ThreadedReplayServer(_check_script()) as srv:
        result = run(srv, "--check", "--warn-messages", "10", "--crit-messages", "~:20",
                     "--warn-age", "30m", "--crit-age", "@1h:1d2h")  # fmt: skip
    assert result.stdout == (
        "MAILQ CRITICAL - 5 messages, 8 recipients, oldest 3h14s | messages=5;10;~:20;0; "
        "recipients=8;;;0; oldest_age=10814s;1800;@3600:93600;0; threads=5;;;0; "
        "kids=2;;;0;\n"
    )


def test_check_several_hosts_one_status_line() -> None:
    with ThreadedReplayServer(_check_script()) as good:  # 127.0.0.2: nobody listens
        result = run(good, "--check", "--warn-messages", "4", "127.0.0.1", "127.0.0.2")
    assert result.exit_code == 3
    lines = result.stdout.splitlines()
    assert lines[0].startswith(
        "MAILQ UNKNOWN - 2 hosts: 1 WARNING, 1 UNKNOWN (127.0.0.1 WARNING, "
        "127.0.0.2 UNKNOWN) | '127.0.0.1 messages'=5;4;;0; "
    )
    assert lines[1].startswith("127.0.0.1: MAILQ WARNING - 5 messages, ")
    assert lines[2].startswith("127.0.0.2: MAILQ UNKNOWN - 127.0.0.2 port ")
    assert len(lines) == 3


def test_check_unknown_when_server_unreachable() -> None:
    with ThreadedReplayServer(Script([])) as srv:
        port = srv.port
    result = CliRunner().invoke(main, ["-p", str(port), "--check"], env=ENV)
    assert result.exit_code == 3
    assert result.stdout == (
        f"MAILQ UNKNOWN - 127.0.0.1 port {port}: connect failed: Connection refused\n"
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--warn-age", "soon"],
        ["--warn-messages", "ten"],
        ["--crit-messages", "20:10"],
        ["--warn-recipients", "@"],
        ["--no-such-option"],
        ["-p"],
    ],
)
def test_check_bad_arguments_are_unknown_with_one_line(args: list[str]) -> None:
    result = CliRunner().invoke(main, ["--check", *args], env=ENV)
    assert result.exit_code == 3
    (line,) = result.stdout.splitlines()
    assert line.startswith("MAILQ UNKNOWN - bad arguments: ")


def test_bad_arguments_without_check_keep_zmailers_usage_error() -> None:
    result = CliRunner().invoke(main, ["--warn-age", "soon"], env=ENV)
    assert result.exit_code == 64


def test_check_login_failure_goes_to_stderr_too() -> None:
    with ThreadedReplayServer(_auth_script()) as srv:
        result = run(srv, "--check", "-U", "admin/wrong")
    assert result.exit_code == 3
    assert result.stdout.startswith("MAILQ UNKNOWN - 127.0.0.1 port ")
    assert "not accepted" in result.stderr


# -- --prometheus -----------------------------------------------------------------------------


def test_prometheus_exposition() -> None:
    script = Script(exchanges("13", "SHOW SNMP") + exchanges("14", "SHOW COUNTERS"))
    with ThreadedReplayServer(script) as srv:
        result = run(srv, "--prometheus")
    text = result.stdout
    assert result.exit_code == 0
    assert 'zmailer_mailq_up{server="127.0.0.1"} 1\n' in text
    assert 'zmailer_mailq_messages{server="127.0.0.1"} 5\n' in text
    assert "# TYPE zmailer_mailq_stats_sc_mq2connects_total counter\n" in text
    assert "# TYPE zmailer_mailq_stats_sc_storedmessages gauge\n" in text
    assert 'zmailer_mailq_stats_sys_load_avg_1_min{server="127.0.0.1"} 0.0' in text
    assert "schedulermasterpid" not in text  # PIDs and times are not metrics
    assert "starttime" not in text
    sample = re.compile(r'^[a-z_][a-z0-9_]*\{server="[^"]*"\} -?[0-9.]+$')
    for line in text.splitlines():
        assert line.startswith(("# HELP ", "# TYPE ")) or sample.match(line)
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(types) == len(set(types))


def test_prometheus_from_zmailer_adds_the_oldest_mail_per_destination() -> None:
    """A server without SHOW METRICS (ZMailer answers its unknown-command line): the
    ages come from THREADS2, labelled, bounded, parsed by the strict parser."""
    unknown = Exchange(
        "SHOW METRICS",
        b"-MAILQ2 Unknown command, or refused by access control; "
        b"VERB='SHOW' REST='METRICS'\n",
    )
    script = Script(
        exchanges("13", "SHOW SNMP")
        + exchanges("14", "SHOW COUNTERS")
        + [unknown]
        + exchanges("12", "SHOW QUEUE THREADS2")
    )
    with ThreadedReplayServer(script) as srv:
        result = run(srv, "--prometheus")
        assert not srv.server.mismatches
    assert result.exit_code == 0
    fams = parse(result.stdout)
    oldest = fams["zmailer_mailq_oldest_message_age_seconds"]
    assert oldest.value(server="127.0.0.1") == 10814
    ages = fams["zmailer_mailq_destination_oldest_age_seconds"].samples
    assert len(ages) == 6  # five threads, and other
    assert max(ages.values()) == 10814
    total = fams["zmailer_mailq_destination_recipients"].samples.values()
    assert sum(total) == 8
    assert not any(name.startswith("zmailer_scheduler_") for name in fams)
    checked = promtool_check(result.stdout)
    assert checked is None or checked[0], checked


def test_prometheus_down_server() -> None:
    with ThreadedReplayServer(Script([])) as srv:
        port = srv.port
    result = CliRunner().invoke(main, ["-p", str(port), "--prometheus"], env=ENV)
    assert 'zmailer_mailq_up{server="127.0.0.1"} 0\n' in result.stdout
    assert result.exit_code == 69


# -- several hosts ---------------------------------------------------------------------------


def test_multi_host_text_sections_and_worst_exit() -> None:
    script = Script(exchanges("13", "SHOW SNMP"), passwords=auth_passwords())
    with ThreadedReplayServer(script) as srv:
        result = run(srv, "-QQQ", "127.0.0.1", "localhost")
    assert result.stdout.count("Kids: 2") == 2
    assert result.stdout.startswith("==> 127.0.0.1 <==\nKids: 2")
    assert "\n\n==> localhost <==\nKids: 2" in result.stdout
    assert result.exit_code == 0
    with ThreadedReplayServer(Script([], passwords=auth_passwords())) as srv:
        bad = run(srv, "-QQQ", "-U", "admin/wrong", "127.0.0.1", "localhost")
    assert bad.exit_code == 77
    assert bad.stdout.count("not accepted") == 2


def test_multi_host_json_labels() -> None:
    with ThreadedReplayServer(Script(exchanges("13", "SHOW SNMP"))) as srv:
        result = run(srv, "--json", "-QQQ", "127.0.0.1", "localhost")
    assert [o["server"] for o in objects(result)] == ["127.0.0.1", "localhost"]


def test_host_from_mailserver_env_and_zenv(tmp_path: Path) -> None:
    zconf = tmp_path / "zmailer.conf"
    zconf.write_text("MAILSERVER=localhost\nPOSTOFFICE=/nowhere\n")
    with ThreadedReplayServer(Script(exchanges("13", "SHOW SNMP"))) as srv:
        by_zenv = run(srv, "--json", "-QQQ", "-Z", str(zconf))
        by_env = run(srv, "--json", "-QQQ", env={"MAILSERVER": "localhost"})
    assert objects(by_zenv)[0]["server"] == "localhost"
    assert objects(by_env)[0]["server"] == "localhost"


def test_single_thread_selection() -> None:
    script = Script(exchanges("15", "SHOW THREAD smtp example.net"))
    with ThreadedReplayServer(script) as srv:
        result = run(srv, "-h", "example.net")
    assert srv.received[1:] == ["SHOW THREAD smtp example.net", "QUIT"]
    assert result.stdout.startswith(
        "smtp/example.net:\n\tY/F/100001: (1 tries, expires in 4d"
    )

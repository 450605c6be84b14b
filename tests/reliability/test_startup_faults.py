# ruff: noqa: F811 - the fixtures are imported from tests.e2e.conftest
"""Issue 14, start-up and configuration: an empty or clause-less scheduler.conf is refused
at start and on SIGHUP; a bad listener, a busy port or a file in the Unix socket's way
give one line and a sysexits status (78 EX_CONFIG, 69 EX_UNAVAILABLE), never a
traceback; ``check-config`` reports bad listener specs; the Unix socket's owner, group
and mode come from flags or PARAMs. All with the real daemon as a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import (  # noqa: F401 - fixtures
    TESTTA_CONF,
    DaemonFactory,
    DaemonProc,
    daemon_factory,
    files_gone,
    short_root,
    wait_until,
)

EX_UNAVAILABLE, EX_CONFIG = 69, 78
OK_RULES = {"TESTTA_RULES": "*=ok"}


def run_to_exit(d: DaemonProc, *extra: str) -> tuple[int, str]:
    """Run the daemon's command line (plus ``extra``) until it exits; (status, output)."""
    argv = [a for a in d.argv if a not in ("--ready-file", str(d.ready))] + list(extra)
    done = subprocess.run(argv, env=d.env, capture_output=True, timeout=60, check=False)
    return done.returncode, (done.stdout + done.stderr).decode(errors="replace")


def one_line_error(output: str) -> None:
    assert "Traceback" not in output
    assert len([ln for ln in output.splitlines() if " ERROR " in ln]) >= 1


@pytest.mark.parametrize("text", ["", "# comments only\n\n", "*/*\tinterval=1m\n"])
def test_a_config_without_clauses_is_refused_at_start(
    daemon_factory: DaemonFactory, text: str
) -> None:
    d = daemon_factory(text, start=False)
    status, output = run_to_exit(d)
    assert status == EX_CONFIG
    one_line_error(output)
    assert "no clause" in output


def test_a_config_without_clauses_is_refused_on_reload(
    daemon_factory: DaemonFactory,
) -> None:
    d = daemon_factory(env=OK_RULES)
    d.conf.write_text("")
    d.send(signal.SIGHUP)
    wait_until(lambda: "keeping the current configuration" in d.log())
    assert "no clause" in d.log()
    relpath = d.submit("still@delivered.example")  # the old clauses still deliver
    wait_until(lambda: files_gone(d.po, relpath))
    assert d.stop() == 0


@pytest.mark.parametrize("spec", ["::1:1174", "127.0.0.1:http-nonexistent", "1.2.3:9"])
def test_a_bad_listener_spec_is_a_config_error(
    daemon_factory: DaemonFactory, spec: str
) -> None:
    d = daemon_factory(start=False)
    d.argv[d.argv.index("127.0.0.1:0")] = spec
    status, output = run_to_exit(d)
    assert status == EX_CONFIG  # "1.2.3" parses (1.2.0.3) but cannot be bound here
    assert spec in output
    one_line_error(output)


def test_check_config_reports_a_bad_mailqsock(tmp_path: Path) -> None:
    conf = tmp_path / "scheduler.conf"
    conf.write_text('PARAMmailqsock = "::1:1174"\n' + TESTTA_CONF)
    done = subprocess.run(
        [sys.executable, "-m", "scheduler", "check-config", str(conf)],
        capture_output=True,
        timeout=60,
        check=False,
        env={**os.environ, "ZCONFIG": str(tmp_path / "none")},
    )
    assert done.returncode == 1
    assert b"PARAMmailqsock" in done.stderr
    assert b"brackets" in done.stderr


def test_a_busy_port_is_one_line_and_ex_unavailable(
    daemon_factory: DaemonFactory,
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        d = daemon_factory(start=False)
        d.argv[d.argv.index("127.0.0.1:0")] = f"127.0.0.1:{port}"
        status, output = run_to_exit(d)
    assert status == EX_UNAVAILABLE
    one_line_error(output)
    assert "in use" in output


def test_a_file_in_the_unix_socket_path_is_kept_and_refused(
    daemon_factory: DaemonFactory,
) -> None:
    d = daemon_factory(start=False)
    victim = d.root / "precious"
    victim.write_text("keep me\n")
    d.argv[d.argv.index("127.0.0.1:0")] = str(victim)
    status, output = run_to_exit(d)
    assert status == EX_CONFIG
    one_line_error(output)
    assert victim.read_text() == "keep me\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another owner needs root")
def test_unix_socket_owner_group_mode_from_flags_and_params(
    daemon_factory: DaemonFactory,
) -> None:
    conf = 'PARAMmailqsock-group = "4242"\nPARAMmailqsock-mode = 0660\n' + TESTTA_CONF
    d = daemon_factory(conf, start=False)
    path = d.root / "mq.sock"
    d.argv += ["-l", f"UNIX:{path}", "--unix-owner", "4343"]
    d.start()
    st = path.stat()
    assert stat.S_ISSOCK(st.st_mode)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (4343, 4242, 0o660)
    assert d.stop() == 0

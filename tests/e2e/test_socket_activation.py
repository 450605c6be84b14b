"""Socket activation: the daemon serves MAILQ v2 on listeners it inherits via LISTEN_FDS.

systemd's protocol (sd_listen_fds(3)): the listening sockets start at fd 3, ``LISTEN_FDS``
says how many, and ``LISTEN_PID`` must be the pid of the process that uses them. A small
``python -c`` wrapper moves the sockets to fd 3.., sets ``LISTEN_PID`` to its own pid and
execs the daemon, which then runs with that same pid, exactly as under systemd.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from scheduler.demo.run import ACTIVATE_WRAPPER
from spool.layout import init_postoffice

GREETING = b"version zmailer 2.0\n"
CHALLENGE = b"220 MAILQ-V2-CHALLENGE: "
STARTUP_TIMEOUT = 30.0

# The demo's wrapper: moves the inherited sockets (argv[1] = comma-separated fds) to
# 3, 4, ... and execs the rest of argv with LISTEN_FDS/LISTEN_PID, as systemd does.
WRAPPER = ACTIVATE_WRAPPER


def write_config(root: Path) -> tuple[Path, Path]:
    auth = root / "scheduler.auth"
    auth.write_text(
        "nobody:nobody:SNMP QQ TT ETRN:[127.0.0.0]/8 [ipv6.0::1]/128\n"
        "local::SNMP QQ TT:\n"
    )
    auth.chmod(0o600)
    conf = root / "scheduler.conf"
    conf.write_text(
        f'PARAMauthfile = "{auth}"\n'
        "\n"
        "*/*\tinterval=1m idlemax=4m expiry=5d\n"
        '\tretries="1 1 2 3 5 8 13 21 34"\n'
        "\tmaxchannel=0 maxring=20 overfeed=150\n"
        '\nlocal/*\tqueueonly command="mailbox"\n'
    )
    return conf, auth


def wait_for(path: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not path.exists():
        if proc.poll() is not None:
            log = path.parent / "daemon.log"
            pytest.fail(
                f"daemon exited with {proc.returncode} before it was ready:\n"
                + log.read_text(errors="replace")
            )
        if time.monotonic() > deadline:
            pytest.fail("daemon did not become ready in time")
        time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=STARTUP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


@pytest.fixture
def listeners(tmp_path: Path) -> Iterator[tuple[socket.socket, socket.socket]]:
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with tcp, unix:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen(16)
        unix.bind(str(tmp_path / "mailq.sock"))
        unix.listen(16)
        yield tcp, unix


def start_daemon(
    tmp_path: Path, socks: Sequence[socket.socket]
) -> tuple[subprocess.Popen[bytes], Path]:
    po = tmp_path / "postoffice"
    init_postoffice(po)
    conf, auth = write_config(tmp_path)
    ready = tmp_path / "ready"
    fds = [s.fileno() for s in socks]
    argv = [sys.executable, "-c", WRAPPER, ",".join(map(str, fds))]
    argv += [sys.executable, "-m", "scheduler", "serve", "-P", str(po)]
    argv += ["-c", str(conf), "-a", str(auth), "--ready-file", str(ready)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    log = (tmp_path / "daemon.log").open("wb")
    with log:
        proc = subprocess.Popen(
            argv,
            pass_fds=fds,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc, ready


def read_greeting(sock: socket.socket) -> bytes:
    sock.settimeout(STARTUP_TIMEOUT)
    data = b""
    while data.count(b"\n") < 2:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def daemon_log(tmp_path: Path) -> str:
    return (tmp_path / "daemon.log").read_text(errors="replace")


def test_inherited_tcp_and_unix_listeners_greet(
    tmp_path: Path, listeners: tuple[socket.socket, socket.socket]
) -> None:
    tcp, unix = listeners
    proc, ready = start_daemon(tmp_path, [tcp, unix])
    try:
        wait_for(ready, proc)
        # The daemon accepts on the sockets we created; close our copies first so that
        # only the daemon can be answering.
        port = tcp.getsockname()[1]
        path = unix.getsockname()
        tcp.close()
        unix.close()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            greeting = read_greeting(client)
            client.sendall(b"QUIT\n")
        assert greeting.startswith(GREETING + CHALLENGE), daemon_log(tmp_path)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(path)
            greeting = read_greeting(client)
            client.sendall(b"QUIT\n")
        # The auth file has an empty-ACL line, usable by Unix-socket peers (MQ2-REF 7.3).
        assert greeting.startswith(GREETING + CHALLENGE), daemon_log(tmp_path)
    finally:
        returncode = stop(proc)
    assert returncode == 0, daemon_log(tmp_path)

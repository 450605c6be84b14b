"""The monitor endpoints of the real daemon over real sockets: /metrics (parsed by the
tests' Prometheus text parser), /ready, /healthy, the HTTP errors, SHOW METRICS, and
systemd's notify protocol received on a test socket."""

from __future__ import annotations

import contextlib
import http.client
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import TESTTA_CONF, DaemonFactory, DaemonProc, wait_until
from tests.promtext import parse, promtool_check
from tests.test_packaging import used_metric_names

RULES = {"TESTTA_RULES": "*@ok.example=ok;*@fail.example=error;*=deferred"}
MONITOR = ("--metrics-listen", "127.0.0.1:0")


def http_address(d: DaemonProc) -> tuple[str, int]:
    for line in d.ready.read_text().split():
        if line.startswith("http://"):
            host, _, port = line[len("http://") :].rstrip("/").rpartition(":")
            return host, int(port)
    raise AssertionError("no monitor address in the ready file")


def get(
    d: DaemonProc, path: str, method: str = "GET"
) -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection(*http_address(d), timeout=20)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        body = resp.read().decode()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def raw(d: DaemonProc, data: bytes) -> bytes:
    with socket.create_connection(http_address(d), timeout=20) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_metrics_ready_and_healthy(daemon_factory: DaemonFactory) -> None:
    d = daemon_factory(env=RULES, args=MONITOR)
    wait_until(lambda: get(d, "/ready")[0] == 200, what="/ready")
    status, headers, body = get(d, "/healthy")
    assert (status, body) == (200, "healthy\n")
    d.submit("a@ok.example", "b@fail.example", "c@later.example")
    d.submit("d@ok.example")

    def delivered() -> float:
        fams = parse(get(d, "/metrics")[2])
        samples = fams["zmailer_scheduler_recipients_delivered_total"].samples
        return sum(samples.values())

    wait_until(lambda: delivered() >= 2, what="two deliveries counted")
    status, headers, body = get(d, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    fams = parse(body)
    assert fams["zmailer_scheduler_up"].value() == 1
    assert fams["zmailer_scheduler_ready"].value() == 1
    assert (
        fams["zmailer_scheduler_recipients_delivered_total"].value(channel="smtp") == 2
    )
    assert fams["zmailer_scheduler_recipients_bounced_total"].value(channel="smtp") == 1
    assert (
        fams["zmailer_scheduler_recipients_deferred_total"].value(channel="smtp") >= 1
    )
    queued = fams["zmailer_scheduler_queued_recipients"].samples
    assert sum(queued.values()) == 1
    ages = fams["zmailer_scheduler_destination_oldest_age_seconds"]
    assert ages.value(channel="smtp", host="later.example") >= 0
    assert ages.value(channel="other", host="other") == 0
    assert (
        fams["zmailer_scheduler_destination_recipients"].value(
            channel="smtp", host="later.example"
        )
        == 1
    )
    assert fams["zmailer_scheduler_transport_agents_started_total"].value() >= 1
    assert fams["process_resident_memory_bytes"].value() > 1_000_000
    assert fams["process_open_fds"].value() > 3
    assert fams["zmailer_scheduler_mailq_sessions_total"].kind == "counter"
    # the same text over MAILQ v2
    (text,) = d.query("SHOW METRICS")
    assert 'zmailer_scheduler_recipients_delivered_total{channel="smtp"} 2\n' in text
    parse(text)


def test_http_errors(daemon_factory: DaemonFactory) -> None:
    d = daemon_factory(args=MONITOR)
    status, headers, _ = get(d, "/metrics", method="POST")
    assert status == 405
    assert headers["allow"] == "GET, HEAD"
    assert get(d, "/nothing")[0] == 404
    status, headers, body = get(d, "/metrics", method="HEAD")
    assert status == 200
    assert body == ""
    assert int(headers["content-length"]) > 100
    assert raw(d, b"GET /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw(d, b"GET /metrics HTTP/2.0\r\nHost: x\r\n\r\n").startswith(
        b"HTTP/1.1 505 "
    )
    assert raw(d, b"GET / HTTP/1.0\r\n" + b"X: y\r\n" * 2000 + b"\r\n").startswith(
        b"HTTP/1.1 431 "
    )
    assert raw(d, b"\x00\xff garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw(d, b"GET /ready HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 ")
    # still serving MAILQ v2 and HTTP
    assert get(d, "/healthy")[0] == 200
    assert d.query("SHOW SNMP")[0].startswith("Kids:")


def test_monitor_off_by_default_and_show_metrics_needs_snmp(
    daemon_factory: DaemonFactory,
) -> None:
    d = daemon_factory()
    assert not any(a.startswith("http") for a in d.ready.read_text().split())
    d.auth.write_text("admin:adminpw:ALL:[127.0.0.0]/8\nnosnmp:pw:TT:[127.0.0.0]/8\n")
    (reply,) = d.query("SHOW METRICS", user="nosnmp", password="pw")
    assert reply.startswith("-")


def test_param_metrics_listen(daemon_factory: DaemonFactory) -> None:
    conf = 'PARAMmetrics-listen = "127.0.0.1:0"\n' + TESTTA_CONF
    d = daemon_factory(conf)
    assert get(d, "/healthy")[0] == 200


def test_config_error_exits_78(daemon_factory: DaemonFactory) -> None:
    d = daemon_factory("smtp/*\tbogus=1\n", start=False)
    result = subprocess.run(d.argv, env=d.env, capture_output=True, timeout=60)
    assert result.returncode == 78, result.stderr


def test_sd_notify_ready_status_watchdog(
    daemon_factory: DaemonFactory, short_root: Path
) -> None:
    path = short_root / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(20)
    try:
        d = daemon_factory(
            env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"}, start=False
        )
        d.start()
        seen: list[str] = []
        while not any("WATCHDOG=1" in m for m in seen) or not any(
            "READY=1" in m for m in seen
        ):
            seen.append(sock.recv(4096).decode())
        ready = next(m for m in seen if "READY=1" in m)
        assert f"MAINPID={d.pid}" in ready
        assert "STATUS=" in ready
        assert any("STATUS=Ready: 0 messages" in m for m in seen)
        d.stop()
        rest = []
        sock.settimeout(2)
        with contextlib.suppress(TimeoutError):
            while True:
                rest.append(sock.recv(4096).decode())
        assert any("STOPPING=1" in m for m in rest)
    finally:
        sock.close()


def test_scrape_passes_promtool_and_has_every_metric_the_alerts_use(
    daemon_factory: DaemonFactory,
) -> None:
    d = daemon_factory(env=RULES, args=MONITOR)
    d.submit("a@ok.example", "c@later.example")
    wait_until(lambda: "later.example" in get(d, "/metrics")[2], what="a destination")
    body = get(d, "/metrics")[2]
    names = set(parse(body))
    # written by `mailq --prometheus` (for ZMailer), not by the daemon
    textfile = {"zmailer_mailq_up", "zmailer_mailq_oldest_message_age_seconds"}
    assert used_metric_names() - textfile <= names
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=body,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mailq_prometheus_carries_the_daemons_metrics(
    daemon_factory: DaemonFactory,
) -> None:
    d = daemon_factory(env=RULES)
    d.submit("c@later.example")
    wait_until(lambda: "later.example" in d.query("SHOW METRICS")[0], what="queued")
    result = subprocess.run(
        [sys.executable, "-m", "mailq", "-p", str(d.address[1]), "-U", "admin/adminpw",
         "--prometheus", d.address[0]],
        capture_output=True, text=True, timeout=60, env=d.env, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    fams = parse(result.stdout)
    server = d.address[0]
    assert fams["zmailer_mailq_up"].value(server=server) == 1
    dest = fams["zmailer_scheduler_destination_recipients"]
    assert dest.value(server=server, channel="smtp", host="later.example") == 1
    assert fams["zmailer_scheduler_ready"].value(server=server) == 1
    assert not any("pid" in name for name in fams)
    checked = promtool_check(result.stdout)
    assert checked is None or checked[0], checked

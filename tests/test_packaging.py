"""What ships beside the code: the systemd units (``systemd-analyze verify`` and
``security``), the Prometheus alert rules (``promtool check rules``), the Grafana dashboard,
the licence and the sdist's contents. Each tool-based check skips only where the tool is
absent; a real scrape is checked by promtool in tests/e2e/test_monitor.py."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
PROMTOOL = shutil.which("promtool")


def units(tmp_path: Path) -> list[Path]:
    """The units with ExecStart pointing at an executable that exists here."""
    exe = shutil.which("mailq-scheduler") or "/bin/true"
    out = []
    for name in ("mailq-scheduler.service", "mailq-scheduler.socket"):
        text = (PACKAGING / name).read_text()
        text = text.replace("/usr/local/bin/mailq-scheduler", exe)
        (tmp_path / name).write_text(text)
        out.append(tmp_path / name)
    return out


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_units_verify(tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", *map(str, units(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "mailq-scheduler" not in result.stderr, result.stderr


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_unit_security_exposure_is_low(tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    service = units(tmp_path)[0]
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", "--threshold=35", str(service)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if "--offline" in result.stderr and "unrecognized" in result.stderr:
        pytest.skip("this systemd-analyze has no --offline")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert found, result.stdout[-500:]
    assert float(found.group(1)) <= 3.5


def test_service_unit_is_notify_and_does_not_retry_config_errors() -> None:
    text = (PACKAGING / "mailq-scheduler.service").read_text()
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "RestartPreventExitStatus=78",
        "KillMode=mixed",
    ):
        assert f"\n{line}\n" in text
    assert re.search(r"\nWatchdogSec=\d+s\n", text)


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")
def test_alert_rules_pass_promtool() -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(PACKAGING / "prometheus-alerts.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def dashboard_exprs() -> list[str]:
    dash = json.loads((PACKAGING / "grafana-dashboard.json").read_text())
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def test_dashboard_is_well_formed() -> None:
    dash = json.loads((PACKAGING / "grafana-dashboard.json").read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert dash["uid"] == "mailq-scheduler"
    assert all(expr.count("(") == expr.count(")") for expr in dashboard_exprs())


def metric_names(text: str) -> set[str]:
    """``zmailer_*`` names used in PromQL text (alerts, dashboard)."""
    return set(re.findall(r"\b(zmailer_[a-z_]+)\b", text))


def used_metric_names() -> set[str]:
    rules = (PACKAGING / "prometheus-alerts.yml").read_text()
    return metric_names(rules) | metric_names("\n".join(dashboard_exprs()))


def test_licence_and_sdist_manifest() -> None:
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    manifest = (ROOT / "MANIFEST.in").read_text()
    for line in ("graft docs", "graft packaging", "graft tests", "include LICENSE"):
        assert line in manifest


def test_docs_stand_on_their_own() -> None:
    """No link leaves the repository (docs/*.md link only to docs, packaging, the web)."""
    for page in (ROOT / "docs").glob("*.md"):
        for target in re.findall(r"\]\(([^)#\s]+)", page.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            resolved = (page.parent / target).resolve()
            assert resolved.is_relative_to(ROOT), f"{page.name}: {target}"
            assert resolved.exists(), f"{page.name}: {target}"

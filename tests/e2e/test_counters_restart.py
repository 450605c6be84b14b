"""The counter block lives in the postoffice by default (issue 3): cumulative counters
survive a daemon restart, gauges are zeroed and recounted, ``mailq -M`` reads the same
file, ZMailer's ``.zmailer.SNMP.block`` is never touched, ``--counters none`` keeps them
in memory."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.e2e.conftest import DaemonFactory, DaemonProc, files_gone, wait_until

OK_RULES = {"TESTTA_RULES": "*@ok.example=ok;*=deferred"}


def snmp(d: DaemonProc) -> dict[str, tuple[int, int, int]]:
    """``Msgs``/``Rcpnts`` lines of SHOW SNMP as (in, out, stored)."""
    (text,) = d.query("SHOW SNMP")
    found = re.findall(r"\b(Msgs|Rcpnts) in (\d+) out (\d+) stored (\d+)", text)
    return {k: (int(i), int(o), int(s)) for k, i, o, s in found}


def local_counters(d: DaemonProc) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "mailq", "-M", "-P", str(d.po.root)],
        capture_output=True,
        check=True,
        env=d.env,
        text=True,
    )
    return result.stdout


def counter(dump: str, name: str) -> int:
    m = re.search(rf"^{re.escape(name)} +(\d+)$", dump, re.M)
    assert m, f"{name} not in the dump"
    return int(m.group(1))


def test_counters_survive_a_restart(daemon_factory: DaemonFactory) -> None:
    d = daemon_factory(env=OK_RULES)
    d.submit("a@ok.example")
    d.submit("b@ok.example")
    wait_until(lambda: snmp(d)["Msgs"] == (2, 2, 0), what="delivery")
    waiting = d.submit("c@later.example")  # (spool ids are inodes: reused, so later)
    wait_until(lambda: snmp(d)["Msgs"] == (3, 2, 1), what="first counts")
    assert snmp(d)["Rcpnts"] == (3, 2, 1)
    assert d.stop() == 0
    block = d.po.root / ".mailq-spool.counters"
    assert block.is_file()
    assert not (d.po.root / ".zmailer.SNMP.block").exists()
    first = local_counters(d)
    assert counter(first, "SYS.SchedulerMasterStarts") == 1

    d.start()
    # The waiting message is picked up again (counted in again, ZMailer does the same);
    # the stored gauges were zeroed at startup and count it once, not twice.
    wait_until(lambda: snmp(d)["Msgs"] == (4, 2, 1), what="reload after restart")
    d.submit("d@ok.example")
    wait_until(lambda: snmp(d)["Msgs"] == (5, 3, 1), what="counts after restart")
    assert snmp(d)["Rcpnts"][1:] == (3, 1)
    assert not files_gone(d.po, waiting)
    second = local_counters(d)  # mailq -M reads the daemon's file while it runs
    assert counter(second, "SYS.SchedulerMasterStarts") == 2
    assert counter(second, "SYS.SchedulerMasterPID") == d.pid
    assert d.stop() == 0


def test_counters_none_keeps_them_in_memory(daemon_factory: DaemonFactory) -> None:
    d = daemon_factory(env=OK_RULES, args=("--counters", "none"))
    relpath = d.submit("a@ok.example")
    wait_until(lambda: files_gone(d.po, relpath), what="delivery")
    wait_until(lambda: snmp(d)["Msgs"] == (1, 1, 0), what="counts")
    assert d.stop() == 0
    assert not (d.po.root / ".mailq-spool.counters").exists()
    d.start()
    assert snmp(d)["Msgs"] == (0, 0, 0)
    assert d.stop() == 0


def test_counters_option_names_the_file(daemon_factory: DaemonFactory) -> None:
    d = daemon_factory(start=False, env=OK_RULES)
    path = d.root / "elsewhere.counters"
    d.argv += ["--counters", str(path)]
    d.start()
    relpath = d.submit("a@ok.example")
    wait_until(lambda: files_gone(d.po, relpath), what="delivery")
    wait_until(lambda: snmp(d)["Msgs"] == (1, 1, 0), what="counts")
    assert d.stop() == 0
    assert path.is_file()
    assert not (d.po.root / ".mailq-spool.counters").exists()

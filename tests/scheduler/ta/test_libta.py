"""The TA runtime in-process, with a fake deliverer and real control files."""

from __future__ import annotations

import io
from collections.abc import Sequence

from scheduler.ta.libta import (
    AgentOptions,
    Job,
    JobContext,
    Outcome,
    TaRuntime,
    delivered,
    make_notary,
)
from spool.controlfile import Recipient
from spool.layout import Postoffice
from spool.submit import submit
from tests.scheduler.ta.conftest import MESSAGE, control, statuses


class Exploding:
    batch = False

    def __init__(self) -> None:
        self.jobs: list[Job] = []

    def begin_job(self, job: Job) -> None:
        self.jobs.append(job)

    def deliver(
        self, ctx: JobContext, recipients: Sequence[Recipient]
    ) -> list[Outcome]:
        if recipients[0].user.startswith("boom"):
            raise RuntimeError("agent bug")
        return [delivered("x-local; 250 fine") for _ in recipients]


def _runtime(
    po: Postoffice, stdin: bytes, deliverer: Exploding
) -> tuple[TaRuntime, io.BytesIO]:
    out = io.BytesIO()
    opts = AgentOptions(name="fake", channel="smtp", postoffice=po)
    return TaRuntime(opts, deliverer, io.BytesIO(stdin), out, clock=lambda: 1234.0), out


def test_a_crashing_delivery_is_deferred_and_unlocked(po: Postoffice) -> None:
    rel = submit(po, "a@example.com", ["boom@x.example", "fine@x.example"], MESSAGE)
    deliverer = Exploding()
    rt, out = _runtime(po, f"{rel}\tx.example\n".encode(), deliverer)
    assert rt.run() == 0  # EOF ends the loop
    lines = out.getvalue().decode().splitlines()
    assert lines[0] == "#hungry"
    assert lines[-1] == "#hungry"
    reports = [line.split("\t") for line in lines if not line.startswith("#")]
    assert [r[2].split(" ", 1)[0] for r in reports] == ["deferred", "ok"]
    assert "agent failure: RuntimeError" in reports[0][2]
    assert statuses(po, rel) == {"boom@x.example": " ", "fine@x.example": "+"}
    assert [j.host for j in deliverer.jobs] == ["x.example"]


def test_notary_fields_and_crlf_folding(po: Postoffice) -> None:
    rel = submit(po, "a@example.com", ["b@x.example"], MESSAGE)
    rcpt = control(po, rel).recipients[0]
    outcome = Outcome("deferred", "4.0.0", "smtp; 451 (line1\nline2)", remote_mta="mx")
    notary = make_notary(rcpt, outcome, "smtp[1]")
    assert (
        notary
        == "b@x.example\001delayed\0014.0.0\001smtp; 451 (line1\rline2)\001mx\001smtp[1]"
    )
    assert outcome.text == "smtp; 451 (line1\nline2)"
    assert Outcome("retryat", "4.0.0", "d", message="+60 d").text == "+60 d"

"""A PR record's verdict line counts only the gates that ran: one that was not applicable (an
integration gate with no service map, say) passed without running and is named apart."""

from __future__ import annotations

from helpers import TinyProject

from harness.config.spec import load_specs
from harness.gates.record import GateRecord
from harness.publish import Evidence, PullRequest
from harness.publish.render import render_pr


def gate(name: str, kind: str, phase: str, **extra: object) -> GateRecord:
    fields: dict[str, object] = {"exit_code": 0, "duration_s": 0.1, "passed": True} | extra
    return GateRecord.model_validate(
        {"name": name, "kind": kind, "command": f"run-{name}", "attempt": 1, "phase": phase}
        | fields
    )


def record(tiny: TinyProject, gates: list[GateRecord]) -> str:
    tiny.add_spec("change")
    [spec] = load_specs([tiny.specs]).specs
    evidence = Evidence(
        run_id="r1",
        agent="replay",
        branch="harness/r1/change",
        gates=gates,
        attempts=1,
        fixed={},
        found={},
        flaky=[],
        flagged=[],
        problems=[],
    )
    return render_pr(PullRequest(spec, evidence, "", ["a.py"], []))


def test_a_gate_that_did_not_run_is_not_counted_as_passed(tiny: TinyProject) -> None:
    absent = "no service map: services/absent.yaml"
    verify = [
        gate("lint", "lint", "verify"),
        gate("tests", "test", "verify"),
        gate("tests", "test", "verify", run=2),  # a flaky check's re-run: the same gate
        gate("integration-1", "integration", "verify", exit_code=None, not_applicable=absent),
    ]
    text = record(tiny, [gate("lint", "lint", "attempt"), *verify])
    assert (
        "Verified by harness on attempt 1: all 2 gates that ran passed again on the committed "
        f"tree; not run, so not counted: `integration-1` ({absent})."
    ) in text
    assert "all 3 gates" not in text and "all 4 gates" not in text
    assert f"| verify | 1 | integration-1 | `run-integration-1` | not run | n/a: {absent} |" in text


def test_every_gate_ran(tiny: TinyProject) -> None:
    text = record(tiny, [gate("tests", "test", "verify")])
    assert "Verified by harness on attempt 1: the 1 gate that ran passed again on the " in text
    assert "not counted" not in text

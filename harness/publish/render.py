"""PR and escalation records as Markdown, from what harness measured only.

The agent's own account never appears as evidence; everything here was measured by harness.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import PurePath

from harness.config.spec import Spec
from harness.gates.record import GateRecord
from harness.problems import render_markdown
from harness.publish import Escalation, Evidence, PullRequest


def gate_table(gates: Sequence[GateRecord]) -> str:
    rows = [
        "| phase | attempt | gate | command | exit | result | counts | duration |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for gate in gates:
        counts = ", ".join(f"{v} {k}" for k, v in gate.counts.items()) or "-"
        exit_code = "timeout" if gate.timed_out else str(gate.exit_code)
        if gate.not_applicable or gate.setup_failure:
            exit_code = "not run"
        result = "pass" if gate.passed else "FAIL"
        if gate.not_applicable:
            result = f"n/a: {gate.not_applicable}"
        name = gate.name if gate.run == 1 else f"{gate.name} (run {gate.run})"
        rows.append(
            f"| {gate.phase} | {gate.attempt} | {name} | `{gate.command}` | {exit_code} "
            f"| {result} | {counts} | {gate.duration_s:.2f}s |"
        )
    return "\n".join(rows)


def verified_gates(verify: Sequence[GateRecord], *, again: bool = True) -> str:
    """What the verify phase proved, counting only the gates that ran: one that was not
    applicable (it passed without running) is named apart, never counted as passed.
    `again`: verification ran them again (else it reused the attempt's runs)."""
    last = {gate.name: gate for gate in verify}  # a re-run (flaky check) is the same gate
    ran = [gate for gate in last.values() if not gate.not_applicable]
    passed = "passed again" if again else "passed"
    if not ran:
        line = "no gate ran on the committed tree"
    elif len(ran) == 1:
        line = f"the 1 gate that ran {passed} on the committed tree"
    else:
        line = f"all {len(ran)} gates that ran {passed} on the committed tree"
    skipped = [gate for gate in last.values() if gate.not_applicable]
    if skipped:
        named = "; ".join(f"`{gate.name}` ({gate.not_applicable})" for gate in skipped)
        line += f"; not run, so not counted: {named}"
    return line


def base_table(gates: Sequence[GateRecord], phase: str) -> list[str]:
    """Each gate's last run of `phase` against its run on the base commit, side by side:
    tests passed/failed/skipped/total, or files checked (harness.gates.base_compare)."""
    last = {gate.name: gate for gate in gates if gate.phase == phase and gate.base is not None}
    if not last:
        return []
    rows = ["| gate | compared | base | head | findings |", "|---|---|---|---|---|"]
    for gate in last.values():
        base = gate.base
        assert base is not None
        if base.compared == "none":
            rows.append(f"| {gate.name} | {base.note or 'not compared'} | - | - | - |")
            continue
        keys = (
            ("passed", "failed", "skipped", "total") if base.compared == "tests" else ("checked",)
        )
        sides = ["/".join(str(side.get(k, 0)) for k in keys) for side in (base.base, base.head)]
        found = "; ".join(
            f"{kind}: {', '.join(f'`{i}`' for i in ids[:10])}" + (" …" if len(ids) > 10 else "")
            for kind, ids in base.findings.items()
        )
        what = "tests (" + "/".join(keys) + ")" if base.compared == "tests" else "files checked"
        rows.append(f"| {gate.name} | {what} | {sides[0]} | {sides[1]} | {found or 'none'} |")
    return ["## Base against head", "", *rows, ""]


def failing_gate(gates: Sequence[GateRecord], attempt: int) -> GateRecord | None:
    """The gate that failed an attempt: a gate's last run decides (a flaky test's first run
    failed, its re-run passed: the attempt did not fail on it)."""
    last: dict[str, GateRecord] = {}
    for gate in gates:
        if gate.phase == "attempt" and gate.attempt == attempt:
            last[gate.name] = gate
    return next((gate for gate in last.values() if not gate.passed), None)


RUN_FOLDERS = ("tasks", "base", "services", "prs", "escalations")
"""The folders of a run's directory that records point into."""


def in_run(path: str | None, run_id: str) -> str | None:
    """A path under the run's directory (runs/<run-id>/…) relative to it, e.g.
    tasks/fix/gates/attempt-1-tests.log: a record names no directory of the machine that
    ran it. Any other path is left as it is."""
    if path is None:
        return None
    parts = PurePath(path).parts
    for at in range(len(parts) - 2, -1, -1):
        if parts[at] == run_id and parts[at + 1] in RUN_FOLDERS:
            return str(PurePath(*parts[at + 1 :]))
    return path


def spec_file(spec: Spec) -> str:
    """The spec file relative to its repository's top level, or (when it lives outside the
    repository) its name alone."""
    source = PurePath(spec.source)
    if source.is_relative_to(spec.git_toplevel):
        return str(source.relative_to(spec.git_toplevel))
    return source.name


def _header(spec: Spec, evidence: Evidence) -> list[str]:
    branch = evidence.branch
    return [
        f"- spec: `{spec.id}` (tier {spec.tier}) from `{spec_file(spec)}`",
        f"- run: `{evidence.run_id}` · agent: `{evidence.agent}`",
        f"- branch: `{branch}` · base: `{spec.base_commit[:12]}`" if branch else "- branch: none",
        *_cost_and_time(evidence),
        *(f"- Closes {ticket}" for ticket in spec.closes),
    ]


def _cost_and_time(evidence: Evidence) -> list[str]:
    usage = evidence.usage
    if usage is None:
        return []
    tokens = usage.all_input_tokens + usage.output_tokens
    return [
        f"- cost: ${usage.cost_usd:.2f} ({usage.calls} model calls, {tokens} tokens) · time: "
        f"agent {evidence.agent_s:.1f}s, gates {evidence.gates_s:.1f}s"
    ]


def render_pr(pr: PullRequest) -> str:
    spec, evidence = pr.spec, pr.evidence
    gates, attempts, reused = evidence.gates, evidence.attempts, evidence.verify_reused
    verify = evidence.verified_by
    lines = [f"# {spec.title}", "", *_header(spec, evidence), ""]
    lines += [
        f"Verified by harness on attempt {attempts}: {verified_gates(verify, again=not reused)}"
        ". Everything below was measured by harness, not reported by the agent.",
        "",
        *([f"- {reused.line()}", ""] if reused else []),
        "## Gate evidence",
        "",
        gate_table(gates),
        "",
        *base_table(verify, verify[0].phase if verify else "verify"),
        "## Attempts",
        "",
    ]
    for number in range(1, attempts + 1):
        failed = failing_gate(gates, number)
        verdict = f"failed gate `{failed.name}` ({failed.ending})" if failed else "passed"
        lines.append(f"- attempt {number}: {verdict}")
        lines += [f"  - fixed: {item}" for item in evidence.fixed.get(str(number), [])]
    if evidence.flaky:
        lines += ["", "## Flaky (failed, then passed on a re-run of the same tree)", ""]
        lines += [
            f"- `{p.test_id or p.gate}`: {p.detail.strip().splitlines()[0]}" for p in evidence.flaky
        ]
    if evidence.flagged:
        lines += ["", "## Flagged by the fake-green guard (policy: flag)", ""]
        lines += [f"- {p.code}: {p.detail}" for p in evidence.flagged]
    lines += ["", "## Changes", "", "```text", pr.diffstat.rstrip() or "(no changes)", "```", ""]
    lines += ["Files changed:", "", *(f"- `{path}`" for path in pr.files), ""]
    if pr.unexpected_files:
        lines += [
            "Outside the spec's expected `paths` (review these):",
            "",
            *(f"- `{path}`" for path in pr.unexpected_files),
            "",
        ]
    return "\n".join(lines)


def render_escalation(escalation: Escalation) -> str:
    """Per attempt its problems one line each (`found`); the raw output's tail stands in for
    an attempt whose output no parser understood."""
    spec, evidence = escalation.spec, escalation.evidence
    branch, gates, found = evidence.branch, evidence.gates, evidence.found
    lines = [f"# Escalated: {spec.title}", "", *_header(spec, evidence), ""]
    lines += [f"**Reason:** {escalation.reason}", ""]
    if branch:
        lines += [f"The work in progress is committed on branch `{branch}`; nothing was discarded."]
    else:
        lines += ["No agent ran, so there is no work in progress."]
    lines += ["", f"Agent attempts: {evidence.attempts}.", ""]
    if gates:
        lines += ["## Gate records", "", gate_table(gates), ""]
        last_attempt = [g for g in gates if g.phase == "attempt" and g.attempt == evidence.attempts]
        lines += base_table(last_attempt, "attempt")
    for number in range(1, evidence.attempts + 1):
        gate = failing_gate(gates, number)
        if gate is not None:
            lines += [
                f"## Attempt {number}: gate `{gate.name}` failed ({gate.ending})",
                "",
                f"`{gate.command}` · full output (in the run's directory): "
                f"`{in_run(gate.log, evidence.run_id)}`",
                "",
            ]
            if found.get(str(number)):
                lines += [*(f"- {line}" for line in found[str(number)]), ""]
            else:
                lines += ["```text", gate.excerpt.rstrip() or "(no output)", "```", ""]
    if evidence.problems:
        problems = [
            p.model_copy(update={"log": in_run(p.log, evidence.run_id)}) for p in evidence.problems
        ]
        lines += ["## Last problems", "", render_markdown(problems), ""]
        as_json = [p.as_problem_json() for p in problems]
        lines += ["As application/problem+json:", "", "```json", json.dumps(as_json, indent=2)]
        lines += ["```", ""]
    return "\n".join(lines)

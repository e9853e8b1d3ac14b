"""The report as a Markdown digest: the totals, what needs a person, then one line per task.
The agent's own words are left out (the HTML report quotes them, sanitised)."""

from __future__ import annotations

from harness.report.html import when
from harness.report.model import Report, TaskCard


def _cell(text: str | None) -> str:
    """One table cell: on one line, pipes escaped."""
    return " ".join((text or "").split()).replace("|", "\\|")


def _needs_you(card: TaskCard) -> list[str]:
    r = card.result
    lines = [f"### {r.spec_id}: {r.outcome} — {_cell(r.title)}", ""]
    lines.append(f"- reason: {_cell(r.reason)}")
    if card.failing_gate:
        lines.append(f"- failing gate: `{card.failing_gate}`")
    lines += [f"- problem: `{_cell(line)}`" for line in card.last_problems]
    if r.branch:
        lines.append(f"- branch: `{r.branch}`")
    if card.record:
        lines.append(f"- record: [{card.record}]({card.record})")
    return [*lines, ""]


def render_markdown(report: Report) -> str:
    counts = report.counts()
    night = report.night
    budget = f" of ${night.budget_usd:.2f}" if night and night.budget_usd is not None else ""
    lines = [f"# Night report: {report.run_id}", ""]
    lines.append(
        " · ".join(
            f"{counts[name]} {name}"
            for name in ("verified", "escalated", "error", "skipped", "missed")
        )
    )
    lines += [
        "",
        f"- cost: ${report.cost_usd:.2f}{budget}",
        f"- time: {report.duration_s:.0f} s · {report.tasks_per_hour:.1f} tasks per hour",
    ]
    if report.previous:
        lines.append(
            f"- since {report.previous}: newly failing "
            f"{', '.join(report.newly_failing) or 'none'}; newly verified "
            f"{', '.join(report.newly_verified) or 'none'}"
        )
    lines += ["", "## Needs you", ""]
    lines += [line for card in report.needs_you for line in _needs_you(card)] or ["Nothing.", ""]
    lines += ["## Verified", ""]
    verified = report.by_outcome("verified")
    lines += [
        f"- {c.result.spec_id}: {_cell(c.result.title)} · {c.result.attempts} attempt(s) · "
        f"${c.cost_usd:.2f} · [{c.record}]({c.record})"
        for c in verified
    ] or ["None."]
    skipped = report.by_outcome("skipped", "interrupted", "deferred")
    lines += ["", "## Skipped", ""]
    lines += [
        f"- {c.result.spec_id} ({c.result.outcome}): {_cell(c.result.reason)}" for c in skipped
    ] or ["None."]
    lines += ["", "## Missed", ""]
    lines += [
        f"- {fire.schedule} at {when(fire.fire_at)}: {_cell(fire.detail)}" for fire in report.missed
    ] or ["None."]
    return "\n".join(lines) + "\n"

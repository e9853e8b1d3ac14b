"""Feedback: the problems of one attempt, compacted into what the next attempt is told.

Errors compacted into the context window (12-factor agents), by these rules:

- Deduplicate: a finding reported twice (a gate run twice, a tool repeating itself) is one.
- Group: lint and type findings of one type and code in one file become one problem whose
  `errors` hold the findings, each with its own location, message and context. Failing tests
  are never grouped: each test id stays its own problem.
- Order: gates in the order they first appear in the input; within a gate, by file then line.
- Budget: degrade in steps until the rendering fits `max_tokens`: (1) keep the source context
  of the first few findings only, (2) cut each detail to its first lines, (3) one line per
  finding. If even that is over, it is kept anyway and `truncated` is set: every failing test
  id and every path:line survives any budget.
- Infrastructure and policy problems are few and must be read: kept whole, never degraded.
- Say what changed since the previous attempt, finding by finding, by `Problem.key()`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from pydantic import BaseModel

from harness.problems import Location, Problem, ProblemItem

KEEP_CONTEXT_FOR = 3
"""Budget step 1 keeps the source context of this many findings, the first in gate order."""
DETAIL_LINES = 5
"""Budget step 2 keeps this many lines of each detail and message."""
ONE_LINE_CHARS = 120
"""Budget step 3 keeps this much of the first line of each detail and message."""
MAX_FIXED_SHOWN = 20
WHOLE = frozenset({"infrastructure", "policy"})
"""Categories kept whole: never grouped, never degraded."""


class Feedback(BaseModel):
    """What one attempt's failed gates tell the next attempt."""

    problems: list[Problem]
    """Compacted (and degraded to the budget), in gate order: what the agent is shown."""
    new: list[Problem]
    """Problems none of whose findings failed in the previous attempt (all, on attempt 1)."""
    still_failing: list[Problem]
    """Problems at least one of whose findings also failed in the previous attempt."""
    fixed: list[Problem]
    """The previous attempt's findings that no longer fail, one problem each."""
    raw_count: int
    """Problems before compaction."""
    tokens: int
    """estimate_tokens(render_for_agent(self, attempt)), for the attempt given to compact()."""
    truncated: bool
    """Whether the budget forced dropping context or detail (locations and test ids never)."""


def estimate_tokens(text: str) -> int:
    """ceil(len(text) / 4): the usual ~4 characters per token of English under BPE tokenizers.
    Code and paths run a little denser, so treat budgets as approximate, not exact."""
    return math.ceil(len(text) / 4)


def compact(
    problems: list[Problem],
    *,
    previous: list[Problem] | None = None,
    max_tokens: int = 4000,
    attempt: int | None = None,
) -> Feedback:
    """Compact one attempt's problems. `previous`: the attempt before's, raw or compacted.
    `attempt` (the attempt these problems came from; default 2 with `previous`, else 1) only
    matters for `tokens`, which counts the rendering render_for_agent gives for it."""
    attempt = attempt if attempt is not None else (1 if previous is None else 2)
    findings = _dedupe(f for problem in problems for f in _findings(problem))
    compacted = _in_gate_order(_grouped(findings), findings)
    before = {_diff_key(f) for p in previous or [] for f in _findings(p)}
    now = {_diff_key(f) for f in findings}
    is_new = [not any(_diff_key(f) in before for f in _findings(p)) for p in compacted]
    fixed = _dedupe(f for p in previous or [] for f in _findings(p) if _diff_key(f) not in now)
    for level in range(4):
        shown = _degraded(compacted, level)
        feedback = Feedback(
            problems=shown,
            new=[p for p, n in zip(shown, is_new, strict=True) if n],
            still_failing=[p for p, n in zip(shown, is_new, strict=True) if not n],
            fixed=fixed,
            raw_count=len(problems),
            tokens=0,
            truncated=shown != compacted,
        )
        tokens = estimate_tokens(render_for_agent(feedback, attempt))
        if tokens <= max_tokens or level == 3:
            truncated = feedback.truncated or tokens > max_tokens
            return feedback.model_copy(update={"tokens": tokens, "truncated": truncated})
    raise AssertionError("unreachable")


def _findings(problem: Problem) -> list[Problem]:
    """A problem as the findings it reports: each of its `errors` is one, inheriting the rest."""
    if problem.category in WHOLE or not problem.errors:
        return [problem]
    return [
        problem.model_copy(
            update={
                "detail": item.message,
                "code": item.code or problem.code,
                "location": item.location or problem.location,
                "test_id": item.test_id or problem.test_id,
                "context": item.context,
                "errors": [],
            }
        )
        for item in problem.errors
    ]


def _diff_key(problem: Problem) -> tuple[str | None, ...]:
    # key() with the detail cut as budget step 3 cuts it, so that a previous attempt's
    # compacted problems compare like its raw ones.
    *rest, detail = problem.key()
    return (*rest, detail[:ONE_LINE_CHARS] if detail else None)


def _groupable(problem: Problem) -> bool:
    return (
        problem.category == "agent_fixable"
        and problem.test_id is None
        and problem.location is not None
    )


def _dedupe(findings: Iterable[Problem]) -> list[Problem]:
    # key() ignores lines; for groupable findings two lines are two findings (both are kept and
    # grouped into one problem). A test id, or an infrastructure problem, is one problem.
    seen: set[tuple[object, ...]] = set()
    kept: list[Problem] = []
    for finding in findings:
        loc = finding.location
        lines = (loc.line, loc.column) if loc and _groupable(finding) else ()
        identity = (*_diff_key(finding), *lines)
        if identity not in seen:
            seen.add(identity)
            kept.append(finding)
    return kept


def _grouped(findings: list[Problem]) -> list[Problem]:
    groups: dict[tuple[str | None, ...], list[Problem]] = {}
    singles: list[Problem] = []
    for finding in findings:
        if finding.location is not None and _groupable(finding):
            by = (finding.gate, finding.type, finding.code, finding.location.path)
            groups.setdefault(by, []).append(finding)
        else:
            singles.append(finding)
    merged = [members[0] if len(members) == 1 else _merge(members) for members in groups.values()]
    return singles + merged


def _merge(members: list[Problem]) -> Problem:
    members = sorted(members, key=_position)
    first = members[0]
    path = first.location.path if first.location else ""
    update = {
        # Count-free, so the group's key() stays put while findings come and go.
        "detail": f"{first.code or first.title} in {path}",
        "location": Location(path=path),
        "context": None,
        "pre_existing": all(m.pre_existing for m in members),
        "errors": [
            ProblemItem(message=m.detail, code=m.code, location=m.location, context=m.context)
            for m in members
        ],
    }
    return first.model_copy(update=update)


def _position(problem: Problem) -> tuple[int, str, int, int]:
    loc = (problem.errors[0].location if problem.errors else None) or problem.location
    return (1, loc.path, loc.line or 0, loc.column or 0) if loc else (0, "", 0, 0)


def _in_gate_order(problems: list[Problem], findings: list[Problem]) -> list[Problem]:
    rank: dict[str | None, int] = {}
    for finding in findings:
        rank.setdefault(finding.gate, len(rank))
    return sorted(problems, key=lambda p: (rank[p.gate], *_position(p)))


def _degraded(problems: list[Problem], level: int) -> list[Problem]:
    """Budget step `level` (0: as is) applied to every problem not kept whole."""
    if level == 0:
        return problems
    contexts_left = KEEP_CONTEXT_FOR if level < 3 else 0

    def context(text: str | None) -> str | None:
        nonlocal contexts_left
        contexts_left -= text is not None
        return text if contexts_left >= 0 else None

    shown: list[Problem] = []
    for p in problems:
        if p.category in WHOLE:
            shown.append(p)
            continue
        errors = [
            i.model_copy(
                update={"message": _shortened(i.message, level), "context": context(i.context)}
            )
            for i in p.errors
        ]
        update = {"detail": _shortened(p.detail, level), "context": context(p.context)}
        shown.append(p.model_copy(update={**update, "errors": errors}))
    return shown


def _shortened(text: str, level: int) -> str:
    lines = text.strip().splitlines() or [""]
    if level >= 3:
        return lines[0][:ONE_LINE_CHARS]
    if level == 2 and len(lines) > DETAIL_LINES:
        return "\n".join([*lines[:DETAIL_LINES], f"… ({len(lines) - DETAIL_LINES} more lines)"])
    return text


def render_for_agent(feedback: Feedback, attempt: int) -> str:
    """Markdown for the agent: YAML front matter (the counts), then what happened, what to do.
    `attempt` is the attempt whose gate results these are."""
    fields = {
        "attempt": attempt,
        "problems": len(feedback.problems),
        "new": len(feedback.new),
        "still_failing": len(feedback.still_failing),
        "fixed": len(feedback.fixed),
        "truncated": str(feedback.truncated).lower(),
    }
    front = "".join(f"{name}: {value}\n" for name, value in fields.items())
    return f"---\n{front}---\n" + _body(feedback, attempt)


def _body(feedback: Feedback, attempt: int) -> str:
    new = {p.key() for p in feedback.new}
    lines = ["## What happened"] + ([] if feedback.problems else ["Every gate passed."])
    open_list: object = object()  # the gate whose list of one-liners is open, if any
    for problem in feedback.problems:
        status = None if attempt < 2 else problem.key() in new
        marks = _marks(problem, status)
        if _is_brief(problem):
            if problem.gate != open_list:
                lines.append(f"### {problem.gate or 'harness'}")
            open_list = problem.gate
            lines += [line for f in _parts(problem) for line in _finding(*f, "- ", marks)]
            continue
        open_list = object()
        path = problem.location.path if problem.location else None
        subject = problem.test_id or " ".join(part for part in (path, problem.code) if part)
        subject += f", {len(problem.errors)} findings" if problem.errors else ""
        heading = f"### {problem.gate or 'harness'}: {problem.title}"
        lines.append(heading + (f" — {subject}" if subject else "") + marks)
        if problem.category in WHOLE and problem.command:
            exit_code = "" if problem.exit_code is None else f" (exit code {problem.exit_code})"
            lines.append(f"command: `{problem.command}`{exit_code}")
        if problem.errors:
            if problem.category in WHOLE:  # a group's own detail only names the group
                lines += _finding(None, None, None, problem.detail, problem.context, "", "")
            lines += [line for f in _parts(problem) for line in _finding(*f, "- ", "")]
        else:  # the heading names the test: the finding's line need not repeat it
            p = problem
            lines += _finding(p.location, p.code, None, p.detail, p.context, "", "")
    if feedback.fixed:
        since = f"attempt {attempt - 1}" if attempt > 1 else "the previous attempt"
        labels = [_label(p) for p in feedback.fixed[:MAX_FIXED_SHOWN]]
        more = len(feedback.fixed) - MAX_FIXED_SHOWN
        lines.append(
            f"Fixed since {since}: {', '.join(labels)}" + (f" and {more} more" if more > 0 else "")
        )
    lines += ["## What to do", *_advice(feedback)]
    return "\n".join(lines) + "\n"


Finding = tuple[Location | None, str | None, str | None, str, str | None]


def _parts(problem: Problem) -> list[Finding]:
    """What to show of each finding: location, code, test id, message, context."""
    if not problem.errors:
        return [(problem.location, problem.code, problem.test_id, problem.detail, problem.context)]
    return [
        (item.location, item.code or problem.code, item.test_id, item.message, item.context)
        for item in problem.errors
    ]


def _finding(
    loc: Location | None,
    code: str | None,
    test_id: str | None,
    message: str,
    context: str | None,
    bullet: str,
    marks: str,
) -> list[str]:
    text = message.strip().splitlines() or [""]
    first = text[0] if len(text) == 1 else ""
    # The code is left out when the message already starts with it (AssertionError: ...).
    shown = [f"`{loc}`" if loc else None, None if code and text[0].startswith(code) else code]
    head = " ".join(part for part in [*shown, test_id, first] if part)
    lines = [bullet + head + marks] if head else []
    if len(text) > 1 or not head:
        lines += ["    " + line if line else "" for line in text]
    return lines + (["```text", context.rstrip("\n"), "```"] if context else [])


def _marks(problem: Problem, is_new: bool | None) -> str:
    marks = [] if is_new is None else ["new" if is_new else "still failing"]
    marks += ["pre-existing on base"] if problem.pre_existing else []
    marks += [problem.category] if problem.category != "agent_fixable" else []
    return f" ({', '.join(marks)})" if marks else ""


def _is_brief(problem: Problem) -> bool:
    """Whether every finding of `problem` fits on one line: no context, one-line messages."""
    if problem.category in WHOLE:
        return False
    return all(not ctx and "\n" not in msg.strip() for _, _, _, msg, ctx in _parts(problem))


def _label(problem: Problem) -> str:
    where = str(problem.location) if problem.location else problem.gate
    return problem.test_id or " ".join(
        part for part in (where, problem.code or problem.title) if part
    )


ADVICE = {
    "tests": "Failing tests: fix the code under test, not the tests; never skip, xfail, delete "
    "or loosen them.",
    "findings": "Lint and type findings: fix each at its location; never add noqa, "
    "type: ignore or config exclusions.",
    "pre_existing": "Pre-existing failures (already failing on the base commit) must also pass.",
    "flaky": "Flaky tests passed on a re-run; do not change the tests to hide them.",
    "infrastructure": "Infrastructure problems are not in the code: do not work around them; "
    "name them in your finish summary.",
    "policy": "Policy problems: the change breaks a rule of the policy; undo that part.",
    "truncated": "Output was shortened to fit: every location is listed; run the commands below "
    "for the full text.",
}
"""One line of advice per kind of problem shown."""


def _advice(feedback: Feedback) -> list[str]:
    problems = feedback.problems
    kinds = {p.category for p in problems} | {
        "tests" if p.test_id or p.type.endswith(("test-failure", "test-error")) else "findings"
        for p in problems
        if p.category not in WHOLE
    }
    kinds |= {"pre_existing"} if any(p.pre_existing for p in problems) else set()
    kinds |= {"truncated"} if feedback.truncated else set()
    advice = [f"- {text}" for kind, text in ADVICE.items() if kind in kinds]
    commands = list(dict.fromkeys(p.command for p in problems if p.command))
    if commands:
        advice.append("- Before you finish, run: " + ", ".join(f"`{c}`" for c in commands))
    return advice

"""The demo batch, end to end, in a copy of the demo: real git, real bubblewrap, real gates
(ruff, mypy, pytest). The batch runs once per module; every test reads what it left."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import (
    REPO_ROOT,
    CliResult,
    branch_exists,
    git,
    make_demo_repo,
    run_cli,
    section,
    tree_hashes,
)

RUN_ID = "e2e"
SHOP = "examples/shop"
EXPECTED = {
    # spec id: (outcome, attempts)
    "add-bulk-discount": ("verified", 1),
    "fix-pagination": ("verified", 2),
    "round-tax-per-line": ("escalated", 2),
    "migrate-payment-provider": ("escalated", 0),
    "price-bulk-orders": ("verified", 1),  # integration-gated: examples/mesh has a service map
}
NODES = {
    "add-bulk-discount": ["triage", "provision", "agent", "gates", "guard", "verify", "publish"],
    "fix-pagination": [
        *("triage", "provision", "agent", "gates", "feedback", "agent", "gates"),
        *("guard", "verify", "publish"),
    ],
    "round-tax-per-line": [
        *("triage", "provision", "agent", "gates", "feedback", "agent", "gates"),
        "escalate",
    ],
    "migrate-payment-provider": ["triage", "escalate"],
    "price-bulk-orders": ["triage", "provision", "agent", "gates", "guard", "verify", "publish"],
}
SCREENSHOT = REPO_ROOT / "runs" / "report-demo" / "night-report.png"
"""For a person to look at; README.md shows it (copied to docs/night-report.png)."""
POLICY_GATES = ["ruff check --output-format=json .", "mypy -O json .", "pytest -q"]


@dataclass
class DemoRun:
    repo: Path
    result: CliResult
    before: dict[str, Any]
    after: dict[str, Any]

    @property
    def run_dir(self) -> Path:
        return self.repo / "runs" / RUN_ID

    @property
    def summary(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.run_dir / "summary.json").read_text("utf-8"))
        return data

    def task(self, spec_id: str) -> dict[str, Any]:
        task: dict[str, Any] = {t["spec_id"]: t for t in self.summary["tasks"]}[spec_id]
        return task

    def read(self, relpath: str) -> str:
        """A path as summary.json gives it (relative to the runs folder's parent)."""
        return (self.repo / relpath).read_text(encoding="utf-8")


def checkout_state(repo: Path) -> dict[str, Any]:
    return {
        "files": tree_hashes(repo),
        "head": git(repo, "rev-parse", "HEAD"),
        "branch": git(repo, "symbolic-ref", "HEAD"),
        "status": git(repo, "status", "--porcelain", "--untracked-files=all", "--ignored"),
        "stash": git(repo, "stash", "list"),
    }


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    repo = make_demo_repo(tmp_path_factory.mktemp("e2e") / "demo")
    before = checkout_state(repo)
    argv = ["run", "specs", "--policy", "policies/demo.yaml", "--runs-dir", "runs"]
    result = run_cli([*argv, "--run-id", RUN_ID], cwd=repo)
    after = checkout_state(repo)
    return DemoRun(repo, result, before, after)


def test_exit_code_is_0(demo: DemoRun) -> None:
    assert demo.result.exit_code == 0, demo.result.stdout + demo.result.stderr


def test_summary_shape(demo: DemoRun) -> None:
    summary = demo.summary
    assert summary["run_id"] == RUN_ID
    assert summary["policy"] == "policies/demo.yaml"
    assert summary["started_at"] < summary["finished_at"]
    assert summary["isolation"] == "bubblewrap"
    assert [t["spec_id"] for t in summary["tasks"]] == sorted(EXPECTED)
    keys = {"spec_id", "outcome", "reason", "attempts", "agent", "branch", "pr", "escalation"}
    for task in summary["tasks"]:
        assert keys | {"gates"} <= set(task), task
        for gate in task["gates"]:
            assert {"name", "attempt", "exit_code", "duration_s", "passed"} <= set(gate)


@pytest.mark.parametrize("spec_id", sorted(EXPECTED))
def test_outcome_and_attempts(demo: DemoRun, spec_id: str) -> None:
    task = demo.task(spec_id)
    outcome, attempts = EXPECTED[spec_id]
    assert (task["outcome"], task["attempts"]) == (outcome, attempts), task["reason"]
    assert task["agent"] == "replay"
    if outcome == "verified":
        assert task["reason"] is None
        assert task["pr"] == f"runs/{RUN_ID}/prs/{spec_id}.md"
        assert task["escalation"] is None
    else:
        assert task["reason"]
        assert task["pr"] is None
        assert task["escalation"] == f"runs/{RUN_ID}/escalations/{spec_id}.md"


def test_gate_records_of_the_retried_task(demo: DemoRun) -> None:
    gates = demo.task("fix-pagination")["gates"]
    failed = [g for g in gates if not g["passed"]]
    # The failing test gate is re-run once on the same tree (the flaky check); it fails again.
    assert [(g["name"], g["phase"], g["attempt"], g["exit_code"]) for g in failed] == [
        ("tests", "attempt", 1, 1),
        ("tests", "attempt", 1, 1),
    ]
    # integration: not applicable to the shop (no service map), recorded all the same.
    every = ("lint", "types", "tests", "integration", "acceptance-1")
    # Attempt 2's gates all passed on a clean checkout of the committed tree: verification
    # reuses them (harness.gates.reuse), and runs no gate again.
    assert [(g["phase"], g["attempt"], g["name"]) for g in gates] == [
        *[("attempt", 1, name) for name in ("lint", "types", "tests", "tests")],
        *[("attempt", 2, name) for name in every],
    ]
    assert all(g["passed"] for g in gates if g["attempt"] == 2)
    reused = demo.task("fix-pagination")["verify_reused"]
    assert (reused["attempt"], reused["gates"]) == (2, list(every))


def test_verified_branches_hold_the_change(demo: DemoRun) -> None:
    pagination = git(
        demo.repo, "show", f"harness/{RUN_ID}/fix-pagination:{SHOP}/shop/pagination.py"
    )
    assert "return max(1, (total + per_page - 1) // per_page)" in pagination
    assert "return total // per_page + 1" not in pagination
    tests = git(
        demo.repo, "show", f"harness/{RUN_ID}/fix-pagination:{SHOP}/tests/test_pagination.py"
    )
    assert "def test_exact_multiple_has_no_trailing_empty_page" in tests
    bulk = f"harness/{RUN_ID}/add-bulk-discount"
    assert "def bulk_discount(" in git(demo.repo, "show", f"{bulk}:{SHOP}/shop/pricing.py")
    assert "def test_" in git(demo.repo, "show", f"{bulk}:{SHOP}/tests/test_bulk_discount.py")
    for spec_id in ("fix-pagination", "add-bulk-discount"):
        log = git(demo.repo, "log", "--oneline", f"main..harness/{RUN_ID}/{spec_id}")
        assert log.strip(), f"{spec_id}: no commits beyond base"
    # The main branch did not move.
    assert "bulk_discount" not in git(demo.repo, "show", f"main:{SHOP}/shop/pricing.py")


@pytest.mark.parametrize("spec_id", ["add-bulk-discount", "fix-pagination"])
def test_pr_record_lists_every_gate_with_exit_codes_and_a_diffstat(
    demo: DemoRun, spec_id: str
) -> None:
    task = demo.task(spec_id)
    record = demo.read(task["pr"])
    assert f"harness/{RUN_ID}/{spec_id}" in record
    acceptance = ["pytest -q tests/test_bulk_discount.py", "pytest -q tests/test_pagination.py"]
    commands = [*POLICY_GATES, acceptance[0] if spec_id == "add-bulk-discount" else acceptance[1]]
    # Verification reused the last attempt's runs on the same tree; the record says so.
    assert f"- verify: reused attempt {task['attempts']}'s gate runs on tree " in record
    for command in commands:
        row = f"| attempt | {task['attempts']} | "
        lines = [line for line in record.splitlines() if f"`{command}`" in line]
        assert any(line.startswith(row) and "| 0 | pass |" in line for line in lines), command
    assert "files changed" in record or "file changed" in record
    if spec_id == "fix-pagination":
        assert "| attempt | 1 | tests | `pytest -q` | 1 | FAIL |" in record
        assert "| attempt | 1 | tests (run 2) | `pytest -q` | 1 | FAIL |" in record
        # Paths from the repository's top level, not from the spec's repo directory.
        assert f"- `{SHOP}/shop/pagination.py`" in record
        assert f" {SHOP}/shop/pagination.py " in record  # the diffstat
        # Attempt 2 lists the problems of attempt 1 it fixed.
        attempts = section(record, "Attempts")
        assert "  - fixed: tests/test_pagination.py::test_empty_listing_has_one_page" in attempts


def test_the_integration_gate_ran_for_the_mesh_and_did_not_apply_to_the_shop(
    demo: DemoRun,
) -> None:
    gates = demo.task("price-bulk-orders")["gates"]
    ran = [g for g in gates if g["name"] == "integration"]
    assert [(g["phase"], g["exit_code"], g["passed"]) for g in ran] == [
        ("attempt", 0, True),
        ("verify", 0, True),
    ]
    # The mesh's own routing tests and the spec's bulk-pricing test, through the routing key.
    assert all(g["counts"] == {"passed": 3} for g in ran)
    logs = demo.run_dir / "tasks" / "price-bulk-orders"
    assert sorted(p.name for p in (logs / "services").iterdir()) == [
        "pricing-1.log",
        "pricing-2.log",
    ]
    verify_log = (logs / "gates" / "verify-1-integration.log").read_text("utf-8")
    assert "3 passed" in verify_log
    pricing = git(
        demo.repo, "show", f"harness/{RUN_ID}/price-bulk-orders:examples/mesh/mesh/pricing.py"
    )
    assert "BULK_PERCENT = 5" in pricing
    # A shop task's integration gate did not run: no command, no log.
    shop = [g for g in demo.task("add-bulk-discount")["gates"] if g["name"] == "integration"]
    assert [(g["exit_code"], g["passed"], g["duration_s"]) for g in shop] == [(None, True, 0.0)]
    assert not list((demo.run_dir / "tasks" / "add-bulk-discount" / "gates").glob("*integration*"))


def test_budget_exhausted_escalation_record(demo: DemoRun) -> None:
    task = demo.task("round-tax-per-line")
    assert task["reason"].startswith("budget exhausted")
    record = demo.read(task["escalation"])
    assert "budget exhausted" in record
    assert "gate `tests` failed" in record
    assert "test_tax_for_cart" in record  # the failing test's output
    branch = f"harness/{RUN_ID}/round-tax-per-line"
    assert task["branch"] == branch
    assert f"`{branch}`" in record
    # The branch holds the work in progress as of attempt 2.
    tests = git(demo.repo, "show", f"{branch}:{SHOP}/tests/test_pricing.py")
    assert "from shop.cart import Cart\n" in tests  # attempt 2's lint fix
    assert "def test_line_tax(" in tests  # attempt 1's tests, kept
    assert "def line_tax(" in git(demo.repo, "show", f"{branch}:{SHOP}/shop/pricing.py")


def test_tier_3_escalation_has_no_branch(demo: DemoRun) -> None:
    task = demo.task("migrate-payment-provider")
    assert task["attempts"] == 0
    assert task["branch"] is None
    assert task["gates"] == []
    assert "tier 3" in task["reason"]
    assert not branch_exists(demo.repo, f"harness/{RUN_ID}/migrate-payment-provider")
    assert "No agent ran" in demo.read(task["escalation"])


def test_feedback_file_holds_the_failing_test_output(demo: DemoRun) -> None:
    feedback = (demo.run_dir / "tasks" / "fix-pagination" / "feedback-1.md").read_text("utf-8")
    # YAML front matter with the counts, then what happened and what to do.
    front, body = feedback.removeprefix("---\n").split("---\n", 1)
    assert yaml.safe_load(front)["problems"] == 2
    assert body.startswith("## What happened\n") and "\n## What to do\n" in body
    # Each failing test by its id, at its file:line, with pytest's own assertion message and
    # the source around the failing line.
    assert "tests/test_pagination.py::test_empty_listing_has_one_page" in feedback
    assert "tests/test_pagination.py::test_clamp_page" in feedback
    assert "`tests/test_pagination.py:14`" in feedback
    assert "assert 0 == 1" in feedback
    assert "> 14 |     assert page_count(0, 10) == 1" in feedback
    assert not (demo.run_dir / "tasks" / "fix-pagination" / "feedback-2.md").exists()


def test_no_worktree_is_left(demo: DemoRun) -> None:
    worktrees = git(demo.repo, "worktree", "list", "--porcelain")
    assert [line for line in worktrees.splitlines() if line.startswith("worktree ")] == [
        f"worktree {demo.repo}"
    ]
    leftover = demo.run_dir / "worktrees"
    assert not leftover.exists() or list(leftover.iterdir()) == []
    scratch = demo.run_dir / "scratch"
    assert not scratch.exists() or list(scratch.iterdir()) == []


def test_source_checkout_is_untouched(demo: DemoRun) -> None:
    assert demo.after["files"] == demo.before["files"]
    for key in ("head", "branch", "stash"):
        assert demo.after[key] == demo.before[key], key
    # runs/ is git-ignored, so git status shows exactly what it showed before the run plus it.
    new_status = set(demo.after["status"].splitlines()) - set(demo.before["status"].splitlines())
    assert all(line.startswith("!! runs/") for line in new_status), new_status


def test_events_have_enter_and_exit_for_every_node(demo: DemoRun) -> None:
    lines = (demo.run_dir / "events.jsonl").read_text("utf-8").splitlines()
    events = [json.loads(line) for line in lines]
    assert {e["run_id"] for e in events} == {RUN_ID}
    for spec_id, nodes in NODES.items():
        mine = [
            (e["node"], e["event"])
            for e in events
            if e["spec_id"] == spec_id and e["event"] in ("enter", "exit")
        ]
        expected = [(node, kind) for node in [*nodes, "teardown"] for kind in ("enter", "exit")]
        assert mine == expected, spec_id


def test_the_demos_report_in_chromium_lists_its_escalations_under_needs_you(
    demo: DemoRun,
) -> None:
    """`harness report` on the demo's run, opened in Debian's chromium: the demo's two
    escalations are what "Needs you" lists, before "Verified", and the page asks for nothing
    but itself. Its screenshot is the README's (docs/night-report.png, copied from runs/)."""
    from playwright.sync_api import sync_playwright

    result = run_cli(["report", RUN_ID, "--runs-dir", "runs"], cwd=demo.repo)
    assert result.exit_code == 0, result.stdout + result.stderr
    html = demo.run_dir / "report.html"
    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            view = browser.new_page(viewport={"width": 1000, "height": 900})
            view.on("request", lambda request: requests.append(request.url))
            view.goto(html.as_uri(), wait_until="load")
            headings = view.locator("h2").all_inner_texts()
            cards = {
                (card.get_attribute("data-outcome"), card.locator("h3").inner_text())
                for card in view.locator("#needs-you article").all()
            }
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            view.screenshot(path=str(SCREENSHOT))
        finally:
            browser.close()
    assert headings.index("Needs you") < headings.index("Verified")
    escalated = sorted(s for s, (outcome, _) in EXPECTED.items() if outcome == "escalated")
    assert (
        sorted(heading.split(" ")[1] for outcome, heading in cards if outcome == "escalated")
        == escalated
    )
    assert len(cards) == len(escalated)
    assert requests == [html.as_uri()]

"""`harness run` end to end on a tiny project with shell-command gates: exit codes, one-line
errors, and every way a task ends (verified, escalated before or after the agent, error)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import (
    FINISH,
    WRITE_DONE,
    CliResult,
    TinyProject,
    branch_exists,
    git,
    run_cli,
    section,
    worktree_count,
)

from harness.sandbox import bubblewrap as bwrap


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def run_with_agent(tiny: TinyProject, policy: Path, agent: str) -> CliResult:
    argv = ["run", str(tiny.specs), "--policy", str(policy), "--agent", agent]
    return run_cli([*argv, "--runs-dir", str(tiny.runs), "--run-id", "r1"], cwd=tiny.root)


# --- bad input: exit 2, one line naming file and field, nothing created -----------------------


def test_bad_policy_exits_2_naming_file_and_field(tiny: TinyProject) -> None:
    tiny.add_spec("ok")
    policy = tiny.root / "bad-policy.yaml"
    policy.write_text(
        "gates:\n  - {name: t, kind: test, command: 'true'}\nbudget: {max_atempts: 3}\n", "utf-8"
    )
    result = tiny.run(policy=policy)
    assert result.exit_code == 2
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert str(policy) in lines[0]
    assert "budget.max_atempts" in lines[0]
    assert not tiny.runs.exists(), "nothing may be created for bad input"
    assert not branch_exists(tiny.repo, "harness/r1/ok")


def test_missing_policy_file_exits_2(tiny: TinyProject) -> None:
    tiny.add_spec("ok")
    result = tiny.run(policy=tiny.root / "no-such-policy.yaml")
    assert result.exit_code == 2
    assert "no-such-policy.yaml" in result.stderr
    assert not tiny.runs.exists()


def test_missing_spec_path_exits_2(tiny: TinyProject) -> None:
    result = tiny.run(str(tiny.root / "no-such-specs"))
    assert result.exit_code == 2
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "no-such-specs" in lines[0], result.stderr
    assert not tiny.runs.exists()


def test_malformed_spec_is_reported_and_the_good_one_still_runs(tiny: TinyProject) -> None:
    tiny.add_spec("good")
    bad = tiny.specs / "broken.md"
    bad.write_text("---\nid: broken\ntitle: Broken\ntier: 4\nrepo: ../repo\n---\nx\n", "utf-8")
    result = tiny.run()
    assert result.exit_code == 2
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert str(bad.resolve()) in lines[0]
    assert "tier" in lines[0]
    summary = tiny.summary()
    assert [t["spec_id"] for t in summary["tasks"]] == ["good"]
    assert tiny.task("good")["outcome"] == "verified"
    assert len(summary["input_errors"]) == 1 and "broken.md" in summary["input_errors"][0]


def test_error_lines_keep_square_brackets(tiny: TinyProject) -> None:
    """Error text is data, not markup: brackets in a file name or a pattern must survive."""
    tiny.add_spec("good")
    bad = tiny.specs / "[wip] broken.md"
    bad.write_text("---\nid: '[not] valid'\ntitle: B\ntier: 1\nrepo: ../repo\n---\nx\n", "utf-8")
    result = tiny.run()
    assert result.exit_code == 2
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert "[wip] broken.md" in lines[0]
    assert "(got '[not] valid')" in lines[0]  # the id the error quotes


def test_no_loadable_spec_exits_2_and_runs_nothing(tiny: TinyProject) -> None:
    (tiny.specs / "broken.md").write_text("no front matter\n", "utf-8")
    result = tiny.run()
    assert result.exit_code == 2
    assert "broken.md" in result.stderr
    assert not (tiny.runs / "r1").exists()


def test_existing_run_id_exits_2_and_leaves_the_old_run_alone(tiny: TinyProject) -> None:
    tiny.add_spec("ok")
    first = tiny.run(run_id="same")
    assert first.exit_code == 0, first.stderr
    before = (tiny.runs / "same" / "summary.json").read_bytes()
    second = tiny.run(run_id="same")
    assert second.exit_code == 2
    lines = error_lines(second.stderr)
    assert len(lines) == 1 and "--run-id" in lines[0], second.stderr
    assert (tiny.runs / "same" / "summary.json").read_bytes() == before


def test_run_id_unusable_in_a_branch_name_exits_2(tiny: TinyProject) -> None:
    tiny.add_spec("ok")
    result = tiny.run(run_id="bad id/..")
    assert result.exit_code == 2
    assert "--run-id" in result.stderr
    assert not tiny.runs.exists()


# --- the paths through the task graph ------------------------------------------------------


def test_verified_task(tiny: TinyProject) -> None:
    tiny.add_spec("ok")
    result = tiny.run()
    assert result.exit_code == 0, result.stderr
    task = tiny.task("ok")
    assert task["outcome"] == "verified"
    assert task["attempts"] == 1
    assert task["agent"] == "replay"
    assert task["branch"] == "harness/r1/ok"
    assert task["pr"] == "runs/r1/prs/ok.md"
    # The attempt's run, on a clean checkout of the committed tree, is the verification.
    assert [(g["phase"], g["passed"]) for g in task["gates"]] == [("attempt", True)]
    assert task["verify_reused"]["attempt"] == 1
    assert (tiny.root / task["pr"]).is_file()
    assert git(tiny.repo, "show", "harness/r1/ok:done.txt") == "done\n"
    assert worktree_count(tiny.repo) == 1
    assert git(tiny.repo, "status", "--porcelain") == ""


def test_missing_gate_tool_is_an_error_and_other_tasks_complete(tiny: TinyProject) -> None:
    tiny.add_spec("needs-tool", acceptance=["no-such-tool-xyz --check"])
    tiny.add_spec("fine")
    result = tiny.run()
    assert result.exit_code == 1, result.stderr
    broken = tiny.task("needs-tool")
    assert broken["outcome"] == "error"
    assert "not found" in broken["reason"]
    assert "acceptance-1" in broken["reason"]
    assert branch_exists(tiny.repo, "harness/r1/needs-tool")  # the agent's work is kept
    assert tiny.task("fine")["outcome"] == "verified"
    assert worktree_count(tiny.repo) == 1


def test_missing_gate_tool_reason_names_the_tool(tiny: TinyProject) -> None:
    """summary.json is what a user reads first; its reason should say which tool is missing."""
    tiny.add_spec("needs-tool", acceptance=["no-such-tool-xyz --check"])
    result = tiny.run()
    assert result.exit_code == 1, result.stderr
    assert "no-such-tool-xyz" in tiny.task("needs-tool")["reason"]


def test_agent_override_replaces_the_policys_agent(tiny: TinyProject) -> None:
    tiny.add_spec("ok")
    policy = tiny.write_policy(name="anthropic.yaml", agent={"kind": "anthropic", "model": "m"})
    result = run_with_agent(tiny, policy, "replay")
    assert result.exit_code == 0, result.stderr
    task = tiny.task("ok")
    assert task["agent"] == "replay"
    assert task["outcome"] == "verified"
    assert task["attempts"] == 1


def test_missing_replay_file_is_an_error_before_any_agent_runs(tiny: TinyProject) -> None:
    """A broken set-up is not an escalation that looks like the agent's doing: the task ends
    in error, a person must act, and the run exits 1."""
    tiny.add_spec("no-script", replay=False)
    result = tiny.run()
    assert result.exit_code == 1, result.stderr
    task = tiny.task("no-script")
    assert task["outcome"] == "error"
    assert task["reason"].startswith("owner_action_required: no agent")
    assert "no-script.replay.yaml" in task["reason"]
    assert (task["attempts"], task["branch"], task["escalation"], task["gates"]) == (
        0,
        None,
        None,
        [],
    )
    nodes = [node for node, event in tiny.events("no-script") if event == "enter"]
    assert nodes == ["triage", "teardown"]
    assert not branch_exists(tiny.repo, "harness/r1/no-script")


def test_tier_3_escalates_before_any_agent_runs(tiny: TinyProject) -> None:
    tiny.add_spec("human", tier=3)
    result = tiny.run()
    assert result.exit_code == 0, result.stderr
    task = tiny.task("human")
    assert task["outcome"] == "escalated"
    assert "tier 3" in task["reason"]
    assert task["attempts"] == 0
    assert task["branch"] is None
    assert not (tiny.runs / "r1" / "tasks" / "human" / "attempt-1.json").exists()


def test_protected_path_escalates_and_keeps_the_branch(tiny: TinyProject) -> None:
    workflow = {"tool": "write_file", "args": {"path": ".github/workflows/x.yml", "content": "x"}}
    tiny.add_spec("ci", attempts=[[WRITE_DONE, workflow, FINISH]])
    result = tiny.run()
    assert result.exit_code == 0, result.stderr
    task = tiny.task("ci")
    assert task["outcome"] == "escalated"
    assert "protected" in task["reason"]
    assert ".github/workflows/x.yml" in task["reason"]
    assert task["pr"] is None
    assert not (tiny.runs / "r1" / "prs" / "ci.md").exists()
    assert task["branch"] == "harness/r1/ci"
    assert git(tiny.repo, "show", "harness/r1/ci:.github/workflows/x.yml") == "x"
    record = (tiny.root / task["escalation"]).read_text("utf-8")
    assert "harness/r1/ci" in record
    # The check runs in the guard node, right after the gates pass, before verification. A CI
    # workflow is also a fake-green finding (gate_config_changed); protected is checked first.
    nodes = [node for node, event in tiny.events("ci") if event == "enter"]
    assert nodes == ["triage", "provision", "agent", "gates", "guard", "escalate", "teardown"]
    assert task["reason"].startswith("touches protected paths")
    assert "fake-green" not in task["reason"]


def test_tier_not_in_auto_pr_tiers_escalates_after_verification(tiny: TinyProject) -> None:
    tiny.write_policy(publish={"auto_pr_tiers": [1]})
    tiny.add_spec("tier2", tier=2)
    result = tiny.run()
    assert result.exit_code == 0, result.stderr
    task = tiny.task("tier2")
    assert task["outcome"] == "escalated"
    assert "auto_pr_tiers" in task["reason"]
    assert task["attempts"] == 1
    assert [(g["phase"], g["passed"]) for g in task["gates"]] == [("attempt", True)]
    assert task["verify_reused"]["attempt"] == 1
    assert task["pr"] is None
    assert git(tiny.repo, "show", "harness/r1/tier2:done.txt") == "done\n"


def test_the_gates_judge_only_the_committed_tree(tiny: TinyProject) -> None:
    """build/ is git-ignored: the file the gate wants exists in the worktree but is never
    committed. Every gate phase starts from a clean checkout of the commit, the attempt's too,
    so the attempt's gates already fail on it (before, only verification caught it)."""
    tiny.write_policy(
        gates=[{"name": "built", "kind": "test", "command": "test -f build/ok", "timeout_s": 30}],
        budget={"max_attempts": 1, "max_steps": 20, "wall_clock_s": 120},
    )
    build = {"tool": "write_file", "args": {"path": "build/ok", "content": "ok\n"}}
    tiny.add_spec("ignored", attempts=[[WRITE_DONE, build, FINISH]])
    result = tiny.run()
    assert result.exit_code == 0, result.stderr
    task = tiny.task("ignored")
    assert task["outcome"] == "escalated"
    assert task["reason"].startswith("budget exhausted: gate 'built' still failing")
    # The gate is of kind test: its failure is re-run once (the flaky check) and fails again.
    assert [(g["phase"], g["passed"]) for g in task["gates"]] == [
        ("attempt", False),
        ("attempt", False),
    ]
    assert task["pr"] is None


def test_failing_gate_retries_with_feedback_then_verifies(tiny: TinyProject) -> None:
    tiny.write_policy(
        gates=[
            {"name": "done", "kind": "test", "command": "cat done.txt && grep -q fixed done.txt"}
        ]
    )
    wrong = {"tool": "write_file", "args": {"path": "done.txt", "content": "attempt-one\n"}}
    right = {"tool": "write_file", "args": {"path": "done.txt", "content": "fixed\n"}}
    tiny.add_spec("retry", attempts=[[wrong, FINISH], [right, FINISH]])
    result = tiny.run()
    assert result.exit_code == 0, result.stderr
    task = tiny.task("retry")
    assert task["outcome"] == "verified"
    assert task["attempts"] == 2
    feedback = (tiny.runs / "r1" / "tasks" / "retry" / "feedback-1.md").read_text("utf-8")
    assert "attempt-one" in feedback  # the gate's real output
    nodes = [node for node, event in tiny.events("retry") if event == "enter"]
    assert nodes == [
        "triage",
        "provision",
        "agent",
        "gates",
        "feedback",
        "agent",
        "gates",
        "guard",
        "verify",
        "publish",
        "teardown",
    ]


def test_feedback_files_name_the_attempt_they_report_on(tiny: TinyProject) -> None:
    """feedback-<n>.md holds attempt n's gate results: its front matter says `attempt: n`, and
    what attempt n fixed is "fixed since attempt n-1" (as harness.feedback.render_for_agent
    documents its `attempt`: the attempt whose gate results these are)."""
    tiny.write_policy(
        gates=[
            {"name": "notodo", "kind": "lint", "command": "! grep -rn TODO --include='*.txt' ."}
        ],
        budget={"max_attempts": 3, "max_steps": 20, "wall_clock_s": 120},
    )

    def write(path: str, content: str) -> dict[str, Any]:
        return {"tool": "write_file", "args": {"path": path, "content": content}}

    tiny.add_spec(
        "three",
        attempts=[
            [write("a.txt", "TODO a\n"), write("b.txt", "TODO b\n"), FINISH],
            [write("a.txt", "a\n"), FINISH],
            [write("b.txt", "b\n"), FINISH],
        ],
    )
    result = tiny.run()
    assert result.exit_code == 0, result.stderr
    task = tiny.task("three")
    assert (task["outcome"], task["attempts"]) == ("verified", 3)

    def read(n: int) -> tuple[dict[str, Any], str]:
        text = (tiny.runs / "r1" / "tasks" / "three" / f"feedback-{n}.md").read_text("utf-8")
        front, body = text.removeprefix("---\n").split("---\n", 1)
        return yaml.safe_load(front), body

    first, _ = read(1)
    assert (first["attempt"], first["problems"], first["fixed"]) == (1, 2, 0)
    second, body = read(2)
    assert second == {
        "attempt": 2,
        "problems": 1,
        "new": 0,
        "still_failing": 1,
        "fixed": 1,
        "truncated": False,
    }
    assert "Fixed since attempt 1: a.txt:1" in body
    assert "### notodo: Gate failed — b.txt (still failing)" in body
    pr = (tiny.root / task["pr"]).read_text("utf-8")
    assert section(pr, "Attempts").strip().splitlines() == [
        "- attempt 1: failed gate `notodo` (exit 1)",
        "- attempt 2: failed gate `notodo` (exit 1)",
        "  - fixed: a.txt:1: TODO a",
        "- attempt 3: passed",
        "  - fixed: b.txt:1: TODO b",
    ]


def test_budget_exhausted_escalates_with_wip(tiny: TinyProject) -> None:
    wip = {"tool": "write_file", "args": {"path": "wip.txt", "content": "wip\n"}}
    tiny.add_spec("never", attempts=[[wip, FINISH], [wip, FINISH]])
    result = tiny.run()
    assert result.exit_code == 0, result.stderr
    task = tiny.task("never")
    assert task["outcome"] == "escalated"
    assert task["reason"].startswith("budget exhausted")
    assert task["attempts"] == 2
    assert git(tiny.repo, "show", "harness/r1/never:wip.txt") == "wip\n"


def test_no_changes_is_not_published(tiny: TinyProject) -> None:
    tiny.write_policy(gates=[{"name": "t", "kind": "test", "command": "true"}])
    tiny.add_spec("noop", attempts=[[FINISH]])
    result = tiny.run()
    assert result.exit_code == 0, result.stderr
    task = tiny.task("noop")
    assert task["outcome"] == "escalated"
    assert "no changes" in task["reason"]


def test_changes_outside_the_specs_repo_dir_are_shown_in_the_record(tiny: TinyProject) -> None:
    """A spec whose repo is a subdirectory: a command in the sandbox can still write anywhere in
    the worktree, and teardown commits it. Whatever is on the branch must be in the evidence."""
    escape = {
        "tool": "run",
        "args": {"command": "mkdir -p ../.github/workflows && echo x > ../.github/workflows/x.yml"},
    }
    tiny.add_spec("sub", repo="../repo/proj", attempts=[[WRITE_DONE, escape, FINISH]])
    result = tiny.run()
    assert result.exit_code == 0, result.stderr
    task = tiny.task("sub")
    assert git(tiny.repo, "show", "harness/r1/sub:.github/workflows/x.yml") == "x\n"
    record = tiny.root / (task["pr"] or task["escalation"])
    assert ".github/workflows/x.yml" in record.read_text("utf-8")


def test_runs_default_to_the_working_directory(demo_repo: Path) -> None:
    """No --runs-dir: the run lands in ./runs of the working directory (here the demo copy).
    The tier-3 demo spec escalates before any agent runs, so no gate tool is needed."""
    spec = "specs/migrate-payment-provider.md"
    argv = ["run", spec, "--policy", "policies/demo.yaml", "--run-id", "cwd"]
    result = run_cli(argv, cwd=demo_repo)
    assert result.exit_code == 0, result.stderr
    summary = json.loads((demo_repo / "runs" / "cwd" / "summary.json").read_text("utf-8"))
    [task] = summary["tasks"]
    assert (task["spec_id"], task["outcome"], task["attempts"]) == (
        "migrate-payment-provider",
        "escalated",
        0,
    )
    assert (demo_repo / task["escalation"]).is_file()


def test_without_bubblewrap_the_run_works_and_says_isolation_is_off(
    tiny: TinyProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No bubblewrap (or one that cannot make namespaces): commands run unconfined, the run
    still completes, stderr says so loudly and summary.json records it."""
    off = bwrap.Isolation(False, "bubblewrap (bwrap) is not installed")
    monkeypatch.setattr(bwrap, "probe", lambda: off)
    tiny.add_spec("plain")
    result = tiny.run()
    assert result.exit_code == 0, result.stderr
    assert "isolation is OFF" in result.stderr
    assert tiny.task("plain")["outcome"] == "verified"
    assert tiny.summary()["isolation"] == "none: bubblewrap (bwrap) is not installed"

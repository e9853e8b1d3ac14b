"""harness fleet and harness promote on the tiny project with the replay agent: variants that
differ in outcome, held-out checks, attempts and diff size, ranked exactly as the issue says;
held-out checks that no agent sees; --first-verified; promote; bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import FINISH, REPO_ROOT, TinyProject, git, make_tiny_repo, run_cli

from harness.agents.prompt import task_message
from harness.config.spec import load_spec

HOLDOUT = "grep -q good done.txt"


def write(path: str, content: str) -> dict[str, Any]:
    return {"tool": "write_file", "args": {"path": path, "content": content}}


# What each variant's replay does (attempt lists); the gate is `test -f done.txt`.
VARIANTS: dict[int, list[list[dict[str, Any]]]] = {
    1: [[FINISH], [FINISH]],  # never writes done.txt: escalated after 2 attempts
    2: [[FINISH], [write("done.txt", "good\n"), FINISH]],  # verified on attempt 2
    3: [[write("done.txt", "done\n"), write("tests/test_salvage.py", "x = 1\n"), FINISH]],
    4: [[write("done.txt", "good\n"), FINISH]],  # verified at once, held-out passes, smallest
    5: [[write("done.txt", "good\n"), write("notes.txt", "a\nb\n"), FINISH]],  # a bigger diff
}


def fleet_project(root: Path) -> TinyProject:
    project = TinyProject(root)
    make_tiny_repo(project.repo)
    project.write_policy()
    project.add_spec("task", replay=False, holdout=[HOLDOUT], paths=["done.txt", "tests/**"])
    for k, attempts in VARIANTS.items():
        script = {"attempts": [{"steps": steps} for steps in attempts]}
        (project.specs / f"task.v{k}.replay.yaml").write_text(yaml.safe_dump(script), "utf-8")
    return project


@pytest.fixture(scope="module")
def ranked(tmp_path_factory: pytest.TempPathFactory) -> TinyProject:
    project = fleet_project(tmp_path_factory.mktemp("fleet"))
    argv = ["fleet", str(project.specs / "task.md"), "-n", "5", "--policy"]
    argv += [str(project.root / "policy.yaml"), "--runs-dir", str(project.runs), "--run-id", "f1"]
    result = run_cli(argv, cwd=project.root)
    assert result.exit_code == 0, result.stdout + result.stderr
    (project.root / "fleet-stdout.txt").write_text(result.stdout, "utf-8")
    return project


def test_variants_are_ranked_on_evidence_in_the_issues_order(ranked: TinyProject) -> None:
    tasks = ranked.summary("f1")["tasks"]
    order = [(t["spec_id"], t["rank"], t["rank_reason"].split(":")[0]) for t in tasks]
    assert order == [
        ("task/v4", 1, "ahead of task/v5 on diff lines"),
        ("task/v5", 2, "behind task/v4 on diff lines"),
        ("task/v2", 3, "behind task/v5 on attempts"),
        ("task/v3", 4, "behind task/v2 on held-out checks"),
        ("task/v1", 5, "behind task/v3 on verified"),
    ]
    printed = (ranked.root / "fleet-stdout.txt").read_text("utf-8")
    board = printed.split("fleet f1: ranked on evidence", 1)[1]
    shown = [line.split("│")[2].strip() for line in board.splitlines() if "│ task/v" in line]
    assert shown == ["task/v4", "task/v5", "task/v2", "task/v3", "task/v1"]
    v3 = ranked.task("task/v3", "f1")
    assert v3["variant"] == {"k": 3, "agent": None, "model": None, "prompt": None}
    assert "held-out 0/1" in v3["rank_reason"] and "1 attempt," in v3["rank_reason"]
    assert "2 lines in 2 files (0 outside paths)" in v3["rank_reason"]
    v5 = ranked.task("task/v5", "f1")["rank_reason"]
    assert "held-out 1/1" in v5 and "1 outside paths" in v5
    assert ranked.task("task/v4", "f1")["branch"].endswith("/f1/task/v4")


def test_held_out_checks_are_in_no_prompt_or_feedback(ranked: TinyProject) -> None:
    seen = [p for p in (ranked.runs / "f1" / "tasks").rglob("*") if p.is_file()]
    assert any(p.name.startswith("feedback-") for p in seen)  # v1 and v2 were told things
    assert not [p for p in seen if "grep -q good" in p.read_text("utf-8", errors="replace")]
    assert "grep -q good" not in (ranked.runs / "f1" / "events.jsonl").read_text("utf-8")
    spec = load_spec(ranked.specs / "task.md")
    assert spec.holdout == [HOLDOUT]
    assert "grep -q good" not in task_message(spec, 1, None)
    # …and they did run, on the verified variants only, at the end.
    held = ranked.runs / "f1" / "holdout"
    assert sorted(p.name for p in held.iterdir()) == ["task"]
    assert sorted(p.name for p in (held / "task").iterdir()) == ["v2", "v3", "v4", "v5"]
    assert json.loads((held / "task" / "v3" / "results.json").read_text()) == [[HOLDOUT, False]]


def test_promote_picks_the_top_and_lists_the_tests_it_lacks(ranked: TinyProject) -> None:
    result = run_cli(["promote", "f1", "task", "--runs-dir", str(ranked.runs)], ranked.root)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "promoted task/v4 (rank 1)" in result.stdout
    record = (ranked.runs / "f1" / "prs" / "task.md").read_text("utf-8")
    assert "Promoted variant **task/v4**" in record and "[DRAFT]" not in record
    assert "- `tests/test_salvage.py` (on `harness/f1/task/v3`)" in record
    assert "| task/v1 | escalated | 5 |" in record


def test_promote_refuses_an_unverified_variant_unless_forced(ranked: TinyProject) -> None:
    argv = ["promote", "f1", "task", "--variant", "1", "--runs-dir", str(ranked.runs)]
    refused = run_cli(argv, ranked.root)
    assert refused.exit_code == 2
    assert "task/v1 is escalated, not verified; --force" in refused.stderr
    forced = run_cli([*argv, "--force"], ranked.root)
    assert forced.exit_code == 0, forced.stderr
    assert "draft PR record" in forced.stdout
    assert (ranked.runs / "f1" / "prs" / "task.md").read_text("utf-8").startswith("# [DRAFT]")
    unknown = run_cli(["promote", "f1", "nope", "--runs-dir", str(ranked.runs)], ranked.root)
    assert unknown.exit_code == 2 and "no fleet of 'nope'; its specs: task" in unknown.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-n", "0"], "-n 0: a fleet needs at least 1 variant"),
        (["--vary", "colour=red"], "--vary 'colour=red': unknown key 'colour'"),
        (["--vary", "agent=robot"], "--vary agent=robot: not an agent kind"),
    ],
)
def test_bad_fleet_input_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    project = fleet_project(tmp_path)
    argv = ["fleet", str(project.specs / "task.md"), *args]
    result = run_cli([*argv, "--policy", str(project.root / "policy.yaml")], project.root)
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not project.runs.exists()


def test_first_verified_cancels_the_siblings_and_keeps_their_work(tmp_path: Path) -> None:
    project = TinyProject(tmp_path)
    make_tiny_repo(project.repo)
    project.write_policy()  # concurrency 2: v1 and v2 start together, v3 waits
    project.add_spec("task", replay=False)
    slow = [write("wip.txt", "half done\n"), {"tool": "run", "args": {"command": "sleep 4"}}]
    scripts = {1: [[write("done.txt", "x\n"), FINISH]], 2: [[*slow, FINISH]], 3: [[FINISH]]}
    for k, attempts in scripts.items():
        script = {"attempts": [{"steps": steps} for steps in attempts]}
        (project.specs / f"task.v{k}.replay.yaml").write_text(yaml.safe_dump(script), "utf-8")
    argv = ["fleet", str(project.specs / "task.md"), "-n", "3", "--first-verified"]
    argv += ["--policy", str(project.root / "policy.yaml"), "--runs-dir", str(project.runs)]
    result = run_cli([*argv, "--run-id", "c1"], project.root)
    assert result.exit_code == 0, result.stdout + result.stderr
    outcomes = {t["spec_id"]: (t["outcome"], t["attempts"]) for t in project.summary("c1")["tasks"]}
    assert outcomes == {
        "task/v1": ("verified", 1),
        "task/v2": ("cancelled", 1),  # stopped after its attempt, before its gates
        "task/v3": ("cancelled", 0),  # never started
    }
    v2 = project.task("task/v2", "c1")
    assert v2["reason"] == "cancelled: task/v1 was verified first (--first-verified)"
    assert git(project.repo, "show", "harness/c1/task/v2:wip.txt") == "half done\n"
    assert v2["gates"] == []  # no gate ran on it once v1 was verified


def test_a_stopped_fleet_resumes_as_a_fleet_and_is_ranked(tmp_path: Path) -> None:
    project = TinyProject(tmp_path)
    make_tiny_repo(project.repo)
    policy = project.write_policy(concurrency=1)
    project.add_spec("task")  # both variants play task.replay.yaml
    argv = [sys.executable, "-m", "cli.main", "fleet", str(project.specs / "task.md"), "-n", "2"]
    argv += ["--policy", str(policy), "--runs-dir", str(project.runs), "--run-id", "s1"]
    argv += ["--first-verified"]
    env = os.environ | {
        "HARNESS_FAILPOINTS": "triage.before@task/v2:SIGINT",  # v1 verified, v2 not yet cancelled
        "PYTHONPATH": str(REPO_ROOT),
    }
    stopped = subprocess.run(argv, cwd=project.root, env=env, capture_output=True, timeout=120)
    assert stopped.returncode == 130, stopped.stderr
    assert "ranked on evidence" not in stopped.stdout.decode()
    resumed = run_cli(["resume", "s1", "--runs-dir", str(project.runs)], project.root)
    assert resumed.exit_code == 0, resumed.stdout + resumed.stderr
    assert "fleet s1: ranked on evidence" in resumed.stdout
    tasks = {t["spec_id"]: t for t in project.summary("s1")["tasks"]}
    # --first-verified was recorded with the run: v1, verified before the stop, cancels v2.
    assert (tasks["task/v1"]["outcome"], tasks["task/v1"]["rank"]) == ("verified", 1)
    assert (tasks["task/v2"]["outcome"], tasks["task/v2"]["rank"]) == ("cancelled", 2)
    assert not (project.runs / "s1" / "prs" / "task" / "v2.md").exists()


def test_the_report_shows_each_variants_rank(ranked: TinyProject) -> None:
    result = run_cli(["report", "f1", "--runs-dir", str(ranked.runs)], ranked.root)
    assert result.exit_code == 0, result.stdout + result.stderr
    html = (ranked.runs / "f1" / "report.html").read_text("utf-8")
    assert "fleet rank 1: ahead of task/v5 on diff lines" in html
    assert "fleet rank 5: behind task/v3 on verified" in html

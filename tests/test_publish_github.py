"""Publishing on GitHub, end to end: `harness run` and `harness publish` with
`publish.forge: github` against the loopback stand-in (tests/forge_github.py): real git smart
HTTP pushes checked for GitHub's token form, and REST calls made by githubkit, every body
validated against GitHub's OpenAPI description."""

from __future__ import annotations

import base64
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from forge_github import GitHubStandIn, requests_text, sticky_bodies
from helpers import FINISH, IDENTITY, WRITE_DONE, TinyProject, git, run_cli

TOKEN_ENV = "FORGE_CRED_E2E"
"""Not secret-shaped by name or value: harness must know it is a secret because the policy
names it, not because it looks like one."""
TOKEN = "planted-forge-credential-0123456789"
PULLS = "/repos/{owner}/{repo}/pulls"
# The gate fails if the forge's token variable reached the sandbox.
LEAK_CHECK = "sh -c 'env | grep -q FORGE_CRED_E2E && exit 3; test -f done.txt'"
GATES = [{"name": "done", "kind": "test", "command": LEAK_CHECK, "timeout_s": 30}]


@pytest.fixture
def forge(tmp_path: Path) -> Iterator[GitHubStandIn]:
    stand_in = GitHubStandIn(tmp_path / "forge")
    stand_in.tokens = {TOKEN}
    with stand_in.serving():
        yield stand_in


@pytest.fixture
def project(
    tiny: TinyProject, forge: GitHubStandIn, monkeypatch: pytest.MonkeyPatch
) -> TinyProject:
    """The tiny repository with origin at the stand-in (main pushed), and a policy publishing
    there; the token only in the environment."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    git(tiny.repo, "remote", "add", "origin", forge.git_url)
    git(tiny.repo, *_auth(), "push", "-q", "origin", "main")
    tiny.write_policy(
        GATES,
        publish={
            "auto_pr_tiers": [1, 2],
            "forge": "github",
            "draft_tiers": [2],
            "labels": ["harness"],
            "reviewers": ["octocat"],
            "github": {"api_url": forge.api_url, "token_env": TOKEN_ENV},
        },
    )
    return tiny


def _auth() -> tuple[str, ...]:
    basic = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    return ("-c", f"http.extraHeader=Authorization: Basic {basic}")


def publish(project: TinyProject, *args: str) -> Any:
    return run_cli(["publish", "r1", *args, "--runs-dir", str(project.runs)], cwd=project.root)


def test_a_verified_task_opens_one_pr_with_its_evidence_and_verdict(
    project: TinyProject, forge: GitHubStandIn
) -> None:
    project.add_spec("add-done", tier=2)
    result = project.run()
    assert result.exit_code == 0, result.stdout
    task = project.task("add-done")
    assert task["outcome"] == "verified", task["reason"]
    branch = task["branch"]
    local_sha = git(project.repo, "rev-parse", branch).strip()
    # The PR's head is exactly the commit harness verified, pushed as it is.
    assert forge.head_of(branch) == local_sha
    [pull] = forge.open_pulls()
    assert task["pr"] == f"{forge.url}/acme/shop/pull/{pull.number}"
    assert (pull.head, pull.base, pull.draft) == (branch, "main", True)  # tier 2: a draft
    assert pull.labels == ["harness"] and pull.reviewers == ["octocat"]
    assert "## Gate evidence" in pull.body and "| attempt | 1 | done |" in pull.body
    # Verification reused attempt 1's run on the same tree, and the PR body says so.
    assert "- verify: reused attempt 1's gate runs on tree " in pull.body
    assert "```diff" in pull.body and "+++ b/done.txt" in pull.body  # the small diff, included
    assert "- cost: $0.00 (0 model calls, 0 tokens) · time: agent" in pull.body
    assert "The agent's summary (its own words, not evidence)</summary>\n\n> done" in pull.body
    [status] = forge.statuses[local_sha]
    assert (status["context"], status["state"]) == ("harness/verify", "success")
    [sticky] = sticky_bodies(forge)
    assert local_sha in sticky
    # The labels went through the issues labels endpoint, as {"labels": [...]}.
    [labels] = [c for c in forge.calls if c.template.endswith("/issues/{issue_number}/labels")]
    assert labels.body == {"labels": ["harness"]}
    # A new PR with its verdict, in at most 6 API calls (7 with the review request).
    assert len(forge.calls) <= 7, [(c.method, c.template) for c in forge.calls]
    # The local record is still written: runs/ keeps the evidence.
    assert (project.runs / "r1" / "prs" / "add-done.md").is_file()
    _token_nowhere(project, forge)


def _token_nowhere(project: TinyProject, forge: GitHubStandIn) -> None:
    """The token is in no request body, record, log or store, on no command line, in no git
    config or remote URL; it only ever travelled in Authorization headers."""
    assert TOKEN not in requests_text(forge)
    for path in project.root.rglob("*"):
        if path.is_file() and ".git/objects" not in str(path):
            assert TOKEN.encode() not in path.read_bytes(), path
    for db in project.runs.rglob("*.db*"):
        assert TOKEN.encode() not in db.read_bytes(), db
    assert TOKEN not in git(project.repo, "config", "--list")
    assert all(auth.startswith("Basic ") for _, _, auth in forge.git_requests if auth)
    pushes = [r for r in forge.git_requests if r[1].endswith("git-receive-pack")]
    assert pushes and all(r[2] for r in pushes)


def test_republishing_with_nothing_to_change_makes_no_write(
    project: TinyProject, forge: GitHubStandIn
) -> None:
    project.add_spec("add-done")
    assert project.run().exit_code == 0
    before, pushes = len(forge.calls), _pushes(forge)
    result = publish(project)
    assert result.exit_code == 0, result.stdout
    assert "converged, nothing to change" in result.stdout
    again = forge.calls[before:]
    assert [c for c in again if c.write] == [], again
    assert len(again) <= 2, [(c.method, c.template) for c in again]
    assert _pushes(forge) == pushes


def _pushes(forge: GitHubStandIn) -> int:
    return sum(r[0] == "POST" and r[1].endswith("git-receive-pack") for r in forge.git_requests)


def test_dry_run_prints_the_plan_and_writes_nothing(
    project: TinyProject, forge: GitHubStandIn
) -> None:
    project.add_spec("add-done")
    policy = yaml.safe_load((project.root / "policy.yaml").read_text(encoding="utf-8"))
    policy["publish"]["forge"] = "local"  # the run publishes locally; publish later
    (project.root / "policy.yaml").write_text(yaml.safe_dump(policy), encoding="utf-8")
    assert project.run().exit_code == 0
    assert forge.calls == []
    pushes = _pushes(forge)  # main, by the fixture
    result = publish(project, "--forge", "github", "--dry-run")
    assert result.exit_code == 0, result.stdout
    assert "would push" in result.stdout and "would open a PR" in result.stdout
    assert forge.writes() == 0 and _pushes(forge) == pushes and forge.open_pulls() == []
    result = publish(project, "--forge", "github")
    assert result.exit_code == 0, result.stdout
    assert len(forge.open_pulls()) == 1


def test_republishing_after_the_branch_moved_pushes_and_moves_the_verdict(
    project: TinyProject, forge: GitHubStandIn
) -> None:
    project.add_spec("add-done")
    assert project.run().exit_code == 0
    branch = project.task("add-done")["branch"]
    old = git(project.repo, "rev-parse", branch).strip()
    # Harness's branch moves on (e.g. verified again after a fix), fast-forward.
    worktree = project.root / "wt"
    git(project.repo, "worktree", "add", "-q", str(worktree), branch)
    (worktree / "more.txt").write_text("more\n", encoding="utf-8")
    git(worktree, "add", "more.txt")
    git(worktree, *IDENTITY, "commit", "-q", "-m", "more")
    new = git(worktree, "rev-parse", "HEAD").strip()
    result = publish(project)
    assert result.exit_code == 0, result.stdout
    assert forge.head_of(branch) == new
    [pull] = forge.open_pulls()
    assert "more.txt" in pull.body  # the diff in the body follows the head
    assert forge.statuses[new][0]["state"] == "success"
    assert old in forge.statuses and len(forge.open_pulls()) == 1
    [sticky] = sticky_bodies(forge)
    assert new in sticky


def test_a_head_moved_by_a_human_makes_the_verdict_stale_not_green(
    project: TinyProject, forge: GitHubStandIn, tmp_path: Path
) -> None:
    project.add_spec("add-done")
    assert project.run().exit_code == 0
    branch = project.task("add-done")["branch"]
    verified = git(project.repo, "rev-parse", branch).strip()
    human = tmp_path / "human"
    git(tmp_path, *_auth(), "clone", "-q", "-b", branch, forge.git_url, str(human))
    (human / "hotfix.txt").write_text("by hand\n", encoding="utf-8")
    git(human, "add", "hotfix.txt")
    git(human, *IDENTITY, "commit", "-q", "-m", "a human's fix")
    git(human, *_auth(), "push", "-q", "origin", branch)
    moved = git(human, "rev-parse", "HEAD").strip()
    result = publish(project)
    assert result.exit_code == 1, result.stdout
    assert "not converged" in result.stdout and "did not verify" in result.stdout
    assert forge.head_of(branch) == moved  # nothing pushed over the human's commit
    [stale] = forge.statuses[moved]
    assert stale["state"] == "error" and stale["description"].startswith("stale")
    assert forge.statuses[verified][0]["state"] == "success"
    [sticky] = sticky_bodies(forge)
    assert moved in sticky and "not verified" in sticky
    # Converged on "stale": publishing again writes nothing more.
    writes = forge.writes()
    assert publish(project).exit_code == 1 and forge.writes() == writes


def test_a_missing_permission_escalates_naming_it(
    project: TinyProject, forge: GitHubStandIn
) -> None:
    forge.deny("POST", PULLS, "pull_requests=write")
    project.add_spec("add-done")
    assert project.run().exit_code == 0
    task = project.task("add-done")
    assert task["outcome"] == "escalated", task
    assert "owner_action_required" in task["reason"]
    assert "pull_requests: write" in task["reason"]
    assert forge.open_pulls() == []
    # The verified work is on the local branch (and the remote's), to publish again.
    assert forge.head_of(task["branch"]) == git(project.repo, "rev-parse", task["branch"]).strip()
    result = publish(project)
    assert result.exit_code == 1
    [line] = [line for line in result.stdout.splitlines() if "not converged" in line]
    assert "pull_requests: write" in line


@pytest.mark.parametrize("status", [429, 403])
def test_a_rate_limit_is_waited_out_then_the_pr_opens(
    project: TinyProject, forge: GitHubStandIn, status: int
) -> None:
    forge.rate_limit("POST", PULLS, retry_after=1, status=status)  # 403: a secondary limit
    project.add_spec("add-done")
    assert project.run().exit_code == 0
    assert project.task("add-done")["outcome"] == "verified"
    creates = [c.status for c in forge.calls if (c.method, c.template) == ("POST", PULLS)]
    assert creates == [status, 201]
    assert len(forge.open_pulls()) == 1


def test_a_rate_limit_asking_too_long_a_wait_escalates_at_once(
    project: TinyProject, forge: GitHubStandIn
) -> None:
    forge.rate_limit("POST", PULLS, retry_after=3600)
    project.add_spec("add-done")
    assert project.run().exit_code == 0
    task = project.task("add-done")
    assert task["outcome"] == "escalated" and "rate limit" in task["reason"], task["reason"]
    # Not waited for: refused at once; the escalation then opened its draft (the limit was
    # one answer's).
    creates = [c.status for c in forge.calls if (c.method, c.template) == ("POST", PULLS)]
    assert creates == [429, 201]
    [pull] = forge.open_pulls()
    assert pull.draft and "needs-human" in pull.labels


def test_a_protected_branch_refusing_the_push_escalates_and_keeps_the_work(
    project: TinyProject, forge: GitHubStandIn
) -> None:
    forge.protect("harness/*")
    project.add_spec("add-done")
    assert project.run().exit_code == 0
    task = project.task("add-done")
    assert task["outcome"] == "escalated", task
    assert "refused the push" in task["reason"] and "GH006" in task["reason"]
    assert forge.head_of(task["branch"]) is None and forge.open_pulls() == []
    assert git(project.repo, "show", f"{task['branch']}:done.txt") == "done\n"


def test_an_escalation_opens_a_draft_pr_labelled_for_a_human(
    project: TinyProject, forge: GitHubStandIn
) -> None:
    # Never writes done.txt: the gate fails on both attempts, and the task escalates.
    note = {"tool": "write_file", "args": {"path": "notes.txt", "content": "tried\n"}}
    project.add_spec("never-done", attempts=[[note, FINISH], [note, FINISH]])
    assert project.run().exit_code == 0
    task = project.task("never-done")
    assert task["outcome"] == "escalated", task
    [pull] = forge.open_pulls()
    assert pull.draft and "needs-human" in pull.labels and "harness" in pull.labels
    assert task["escalation"] == f"{forge.url}/acme/shop/pull/{pull.number}"
    sha = git(project.repo, "rev-parse", task["branch"]).strip()
    assert forge.statuses[sha][0]["state"] == "failure"
    assert "Escalated" in pull.body
    writes = forge.writes()
    assert publish(project).exit_code == 0  # converged already
    assert forge.writes() == writes


@pytest.mark.parametrize("point", ["forge.pushed", "forge.opened"])
def test_killed_between_push_and_create_then_resumed_one_pr(
    project: TinyProject, forge: GitHubStandIn, point: str
) -> None:
    project.add_spec("add-done")
    store = project.runs / "store.db"
    argv = [sys.executable, "-m", "cli.main"]
    common = ["--runs-dir", str(project.runs), "--store", f"sqlite:///{store}"]
    env = {**os.environ, "HARNESS_FAILPOINTS": f"{point}@add-done"}
    run = [*argv, "run", str(project.specs), "--policy", str(project.root / "policy.yaml")]
    killed = subprocess.run(
        [*run, "--run-id", "r1", *common], cwd=project.root, env=env, capture_output=True
    )
    assert killed.returncode == -9, killed.stderr
    assert forge.head_of(project_branch := "harness/r1/add-done") is not None
    env.pop("HARNESS_FAILPOINTS")
    resumed = subprocess.run(
        [*argv, "resume", "r1", *common], cwd=project.root, env=env, capture_output=True
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert project.task("add-done")["outcome"] == "verified"
    [pull] = forge.open_pulls()
    assert pull.head == project_branch
    assert len(sticky_bodies(forge)) == 1
    with sqlite3.connect(store) as db:
        rows = db.execute("select value from harness_effects where key like '%publish%'").fetchall()
    assert rows and f"/pull/{pull.number}" in rows[0][0]


_ = WRITE_DONE


def test_a_github_app_publishes_with_an_installation_token_and_a_check_run(
    project: TinyProject, forge: GitHubStandIn
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = project.root / "app.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    forge.app_key = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    app = {"app_id": 42, "private_key_file": str(pem), "installation_id": 7}
    policy = yaml.safe_load((project.root / "policy.yaml").read_text(encoding="utf-8"))
    policy["publish"]["github"] = {"api_url": forge.api_url, "app": app}
    (project.root / "policy.yaml").write_text(yaml.safe_dump(policy), encoding="utf-8")
    project.add_spec("add-done")
    assert project.run().exit_code == 0
    assert project.task("add-done")["outcome"] == "verified", project.task("add-done")["reason"]
    sha = git(project.repo, "rev-parse", project.task("add-done")["branch"]).strip()
    [run] = forge.check_runs[sha]
    assert (run["name"], run["conclusion"]) == ("harness/verify", "success")
    assert sha not in forge.statuses  # an App's verdict is a check run, not a status
    minted = forge.tokens - {TOKEN}
    assert minted, "no installation token was minted"
    # The REST calls and the push used installation tokens, never the App's key.
    minting = [c for c in forge.calls if c.template.endswith("/access_tokens")]
    assert minting and all(c.authorization.startswith("Bearer ") for c in minting)  # the JWT
    rest = [c for c in forge.calls if c not in minting]
    assert all(c.authorization.split(" ", 1)[-1] in minted for c in rest)
    [push] = [r for r in forge.git_requests if r[0] == "POST" and "receive-pack" in r[1]][-1:]
    user, _, secret = base64.b64decode(push[2].removeprefix("Basic ")).decode().partition(":")
    assert user == "x-access-token" and secret in minted
    writes = forge.writes()
    assert publish(project).exit_code == 0 and forge.writes() == writes


def test_a_pull_request_that_already_exists_counts_as_found(
    project: TinyProject, forge: GitHubStandIn
) -> None:
    project.add_spec("add-done")
    assert project.run().exit_code == 0
    # The lookup by head misses it (e.g. a replica behind): the create's 422 finds it.
    forge.fail("GET", PULLS, 200, [])
    result = publish(project)
    assert result.exit_code == 0, result.stdout
    creates = [c.status for c in forge.calls if (c.method, c.template) == ("POST", PULLS)]
    assert creates == [201, 422]
    assert len(forge.open_pulls()) == 1 and len(sticky_bodies(forge)) == 1


def test_publish_refuses_bad_input_with_exit_2(project: TinyProject, forge: GitHubStandIn) -> None:
    project.add_spec("add-done")
    assert project.run().exit_code == 0
    unknown_run = run_cli(["publish", "nope", "--runs-dir", str(project.runs)], cwd=project.root)
    assert unknown_run.exit_code == 2 and "no run 'nope'" in unknown_run.stderr
    unknown_spec = publish(project, "add-dnoe")
    assert unknown_spec.exit_code == 2 and "no spec 'add-dnoe'" in unknown_spec.stderr
    writes = forge.writes()
    assert publish(project, "add-done").exit_code == 0 and forge.writes() == writes

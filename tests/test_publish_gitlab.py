"""Publishing on GitLab, end to end: `harness run` and `harness publish` with
`publish.forge: gitlab` against the loopback stand-in (tests/forge_gitlab.py), through
python-gitlab and real git smart HTTP. The reconciler is the one GitHub uses; these check the
GitLab side of it."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from forge_gitlab import GitLabStandIn
from helpers import FINISH, TinyProject, git, run_cli

TOKEN_ENV = "FORGE_GITLAB_CRED_E2E"
TOKEN = "glpat-planted-credential-0123456789"


@pytest.fixture
def forge(tmp_path: Path) -> Iterator[GitLabStandIn]:
    stand_in = GitLabStandIn(tmp_path / "forge")
    stand_in.tokens = {TOKEN}
    with stand_in.serving():
        yield stand_in


@pytest.fixture
def project(
    tiny: TinyProject, forge: GitLabStandIn, monkeypatch: pytest.MonkeyPatch
) -> TinyProject:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    basic = base64.b64encode(f"oauth2:{TOKEN}".encode()).decode()
    git(tiny.repo, "remote", "add", "origin", forge.git_url)
    git(tiny.repo, "-c", f"http.extraHeader=Authorization: Basic {basic}", "push", "-q",
        "origin", "main")  # fmt: skip
    tiny.write_policy(
        publish={
            "auto_pr_tiers": [1, 2],
            "forge": "gitlab",
            "draft_tiers": [2],
            "labels": ["harness"],
            "reviewers": ["octocat"],
            "gitlab": {"url": forge.gitlab_url, "token_env": TOKEN_ENV},
        },
    )
    return tiny


def publish(project: TinyProject, *args: str) -> Any:
    return run_cli(["publish", "r1", *args, "--runs-dir", str(project.runs)], cwd=project.root)


def test_a_verified_task_opens_one_merge_request_and_republishing_writes_nothing(
    project: TinyProject, forge: GitLabStandIn
) -> None:
    project.add_spec("add-done", tier=2)
    assert project.run().exit_code == 0
    task = project.task("add-done")
    assert task["outcome"] == "verified", task["reason"]
    sha = git(project.repo, "rev-parse", task["branch"]).strip()
    assert forge.head_of(task["branch"]) == sha
    [mr] = forge.open_mrs()
    assert task["pr"] == mr["web_url"]
    assert mr["title"] == "Draft: Task add-done" and mr["draft"]  # tier 2: a draft
    assert mr["labels"] == ["harness"] and [r["username"] for r in mr["reviewers"]] == ["octocat"]
    assert "## Gate evidence" in mr["description"]
    [status] = forge.gl_statuses[sha]
    assert (status["name"], status["status"]) == ("harness/verify", "success")
    [note] = forge.notes[mr["iid"]]
    assert note["body"].startswith("<!-- harness:sticky add-done ")
    writes = forge.writes()
    result = publish(project)
    assert result.exit_code == 0, result.stdout
    assert "converged, nothing to change" in result.stdout and forge.writes() == writes
    assert TOKEN not in "\n".join(str(call.body) for call in forge.calls)
    for path in project.root.rglob("*"):
        if path.is_file() and ".git/objects" not in str(path):
            assert TOKEN.encode() not in path.read_bytes(), path


def test_an_escalation_opens_a_draft_merge_request_labelled_for_a_human(
    project: TinyProject, forge: GitLabStandIn
) -> None:
    note = {"tool": "write_file", "args": {"path": "notes.txt", "content": "tried\n"}}
    project.add_spec("never-done", attempts=[[note, FINISH], [note, FINISH]])
    assert project.run().exit_code == 0
    task = project.task("never-done")
    assert task["outcome"] == "escalated", task
    [mr] = forge.open_mrs()
    assert mr["draft"] and "needs-human" in mr["labels"]
    sha = git(project.repo, "rev-parse", task["branch"]).strip()
    assert forge.gl_statuses[sha][-1]["status"] == "failed"


def test_a_second_open_merge_request_is_refused_and_the_first_is_found(
    project: TinyProject, forge: GitLabStandIn
) -> None:
    project.add_spec("add-done")
    assert project.run().exit_code == 0
    forge.fail("GET", "/projects/{id}/merge_requests", 200, [])  # the lookup misses it
    result = publish(project)
    assert result.exit_code == 0, result.stdout
    creates = [c.status for c in forge.calls if c.method == "POST" and c.path.endswith("_requests")]
    assert creates == [201, 409] and len(forge.open_mrs()) == 1

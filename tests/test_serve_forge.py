"""`harness serve` with a policy publishing on GitHub: the status comment is on the issue
itself, one comment edited in place (found by its marker), next to the verified PR; a comment
command is taken only from a user GitHub says has write access. The GitHub stand-in
(tests/forge_github.py) checks every request and response against GitHub's OpenAPI
description; `harness serve` is the real subprocess, as in test_serve.py.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from forge_github import GitHubStandIn
from helpers import git
from webhooks import ServeProject, Server, comment, labeled, post

TOKEN = "ghs_" + "s" * 36
ISSUE_COMMENTS = "/repos/{owner}/{repo}/issues/{issue_number}/comments"
PERMISSION = "/repos/{owner}/{repo}/collaborators/{username}/permission"


@pytest.fixture
def forge(tmp_path: Path) -> Iterator[GitHubStandIn]:
    stand_in = GitHubStandIn(tmp_path / "forge")  # acme/shop
    stand_in.tokens = {TOKEN}
    with stand_in.serving():
        yield stand_in


def for_acme(payload: dict[str, Any], number: int) -> dict[str, Any]:
    """GitHub's example payload, about acme/shop (the stand-in's repository)."""
    payload["repository"]["full_name"] = "acme/shop"
    payload["repository"]["name"] = "shop"
    payload["repository"]["owner"]["login"] = "acme"
    payload["issue"]["number"] = number
    return payload


def test_the_status_comment_is_one_comment_on_the_issue_and_commands_need_write_access(
    tmp_path: Path, forge: GitHubStandIn
) -> None:
    publish = {
        "forge": "github",
        "github": {"api_url": forge.api_url, "token_env": "HARNESS_TEST_GITHUB_TOKEN"},
    }
    project = ServeProject(tmp_path / "p", publish=publish, repository="acme/shop")
    repo = project.root / "repo"
    basic = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    git(repo, "remote", "add", "origin", forge.git_url)
    git(
        repo, "-c", f"http.extraHeader=Authorization: Basic {basic}", "push", "-q", "origin", "main"
    )
    task = project.replay_for(31)
    forge.permissions = {"maintainer": "write", "reader": "read"}
    server = Server(project, env={"HARNESS_TEST_GITHUB_TOKEN": TOKEN})
    try:
        assert post(server.port, "issues", for_acme(labeled(31), 31)).body["verdict"] == "admitted"
        project.wait_state(31, "verified")
        # A collaborator GitHub reports as read-only (the payload says COLLABORATOR) is refused.
        as_reader = for_acme(comment(31, "/harness retry", "COLLABORATOR"), 31)
        as_reader["comment"]["user"]["login"] = "reader"
        refused = post(server.port, "issue_comment", as_reader)
        assert refused.body["verdict"] == "refused", refused
        assert "@reader has no write access to acme/shop" in refused.body["message"]
        as_writer = for_acme(comment(31, "/harness retry", "COLLABORATOR"), 31)
        as_writer["comment"]["user"]["login"] = "maintainer"
        retried = post(server.port, "issue_comment", as_writer)
        assert retried.body["verdict"] == "admitted" and retried.body["task"] == task, retried
        project.wait_state(31, "queued")
    finally:
        server.stop()
    issue_comments = [c for c in forge.calls if c.template == ISSUE_COMMENTS and "/31/" in c.path]
    posted = [c for c in issue_comments if c.method == "POST"]
    assert len(posted) == 1, [c.body for c in posted]  # created once, then edited in place
    mine = [b for i, b in forge.comments.items() if forge.comment_pull[i] == 31]
    assert len(mine) == 1 and "<!-- harness:status github:acme/shop#31 -->" in mine[0]["body"]
    edits = [c for c in forge.calls if c.method == "PATCH" and "issues/comments" in c.path]
    states = [c.body["body"].split("**harness**: ")[1].split()[0] for c in edits]
    assert "running" in states and "verified" in states and "refused" in states, states
    # The verified task opened its PR, beside the comment, as any run publishing there does.
    [pull] = forge.open_pulls()
    assert pull.head == f"harness/{task}/{task}"
    assert "- Closes acme/shop#31" in pull.body.splitlines()  # GitHub closes the issue on merge
    asked = [c.path.rsplit("/", 2)[-2] for c in forge.calls if c.template == PERMISSION]
    assert asked == ["reader", "maintainer"]

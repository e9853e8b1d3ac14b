"""A fleet promoted through the forge publisher, against the GitHub stand-in
(tests/forge_github.py: githubkit's REST calls validated against GitHub's OpenAPI, real git
pushes): `harness promote` opens the spec's one PR from the chosen variant's branch, with the
variant named, the others' results and the tests it lacks; `--force` makes a draft; and
`harness publish` of a fleet run publishes the promoted variant only."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from forge_github import GitHubStandIn
from helpers import FINISH, CliResult, TinyProject, git, make_tiny_repo, run_cli

TOKEN_ENV = "FLEET_FORGE_CRED"
TOKEN = "fleet-forge-credential-0123456789"


def write(path: str, content: str) -> dict[str, Any]:
    return {"tool": "write_file", "args": {"path": path, "content": content}}


VARIANTS: dict[int, list[dict[str, Any]]] = {
    1: [write("wrong.txt", "no\n"), FINISH],  # committed, but the gate fails: escalated
    2: [write("done.txt", "ok\n"), write("tests/test_salvage.py", "x = 1\n"), FINISH],
    3: [write("done.txt", "ok\n"), FINISH],  # verified, the smallest diff: rank 1
}


@dataclass
class Fleet:
    project: TinyProject
    forge: GitHubStandIn
    published_before_promote: CliResult
    pulls_before_promote: int

    def cli(self, *args: str) -> CliResult:
        argv = [*args, "--runs-dir", str(self.project.runs)]
        return run_cli(argv, cwd=self.project.root)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("fleet-forge")
    forge = GitHubStandIn(root / "forge")
    forge.tokens = {TOKEN}
    with pytest.MonkeyPatch.context() as env, forge.serving():
        env.setenv(TOKEN_ENV, TOKEN)
        project = TinyProject(root)
        make_tiny_repo(project.repo)
        basic = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
        git(project.repo, "remote", "add", "origin", forge.git_url)
        auth = ("-c", f"http.extraHeader=Authorization: Basic {basic}")
        git(project.repo, *auth, "push", "-q", "origin", "main")
        github = {"api_url": forge.api_url, "token_env": TOKEN_ENV}
        project.write_policy(
            budget={"max_attempts": 1, "max_steps": 20, "wall_clock_s": 120},
            concurrency=3,
            publish={"auto_pr_tiers": [1, 2], "forge": "github", "github": github},
        )
        project.add_spec("task", replay=False, paths=["done.txt", "tests/**"])
        for k, steps in VARIANTS.items():
            script = {"attempts": [{"steps": steps}]}
            (project.specs / f"task.v{k}.replay.yaml").write_text(yaml.safe_dump(script), "utf-8")
        argv = ["fleet", str(project.specs / "task.md"), "-n", "3", "--run-id", "f1"]
        argv += ["--policy", str(project.root / "policy.yaml"), "--runs-dir", str(project.runs)]
        ran = run_cli(argv, cwd=project.root)
        assert ran.exit_code == 0, ran.stdout + ran.stderr
        before = len(forge.open_pulls())
        published = run_cli(["publish", "f1", "--runs-dir", str(project.runs)], project.root)
        yield Fleet(project, forge, published, before)


def test_publish_of_a_fleet_run_publishes_no_variant_until_one_is_promoted(fleet: Fleet) -> None:
    # The run itself opened no PR for its variants, and neither did `harness publish`.
    assert fleet.pulls_before_promote == 0
    published = fleet.published_before_promote
    assert published.exit_code == 0, published.stdout + published.stderr
    assert "task: a fleet: use harness promote f1 task" in published.stdout
    assert "task/v" not in published.stdout
    assert not [c for c in fleet.forge.calls if c.write]


def test_promote_opens_the_specs_pr_from_the_variants_branch(fleet: Fleet) -> None:
    promoted = fleet.cli("promote", "f1", "task")
    assert promoted.exit_code == 0, promoted.stdout + promoted.stderr
    assert "promoted task/v3 (rank 1)" in promoted.stdout
    branch = fleet.project.task("task/v3", "f1")["branch"]
    assert branch.endswith("/f1/task/v3")
    [pull] = [p for p in fleet.forge.open_pulls() if p.head == branch]
    assert f"task: PR on github: {fleet.forge.url}/acme/shop/pull/{pull.number}" in (
        promoted.stdout
    )
    # Its head is exactly the variant's commit harness measured, and it is not a draft.
    sha = git(fleet.project.repo, "rev-parse", branch).strip()
    assert (fleet.forge.head_of(branch), pull.base, pull.draft) == (sha, "main", False)
    assert "Promoted variant **task/v3** of fleet run `f1`" in pull.body
    assert "| task/v1 | escalated | 3 |" in pull.body and "| task/v2 | verified | 2 |" in pull.body
    assert "`tests/test_salvage.py` (on `harness/f1/task/v2`)" in pull.body
    assert fleet.forge.statuses[sha][0]["state"] == "success"
    # No other variant's branch went up.
    assert [p.head for p in fleet.forge.open_pulls()] == [branch]
    # `harness publish` of the fleet now converges the promoted variant: nothing to change.
    writes = len([c for c in fleet.forge.calls if c.write])
    again = fleet.cli("publish", "f1")
    assert again.exit_code == 0, again.stdout + again.stderr
    assert "task: converged, nothing to change" in again.stdout
    assert len([c for c in fleet.forge.calls if c.write]) == writes


def test_forcing_an_unverified_variant_publishes_a_draft(fleet: Fleet) -> None:
    forced = fleet.cli("promote", "f1", "task", "--variant", "1", "--force")
    assert forced.exit_code == 0, forced.stdout + forced.stderr
    branch = fleet.project.task("task/v1", "f1")["branch"]
    [pull] = [p for p in fleet.forge.open_pulls() if p.head == branch]
    assert pull.draft and pull.title.startswith("[DRAFT] ")
    assert "Promoted variant **task/v1**" in pull.body
    sha = git(fleet.project.repo, "rev-parse", branch).strip()
    [status] = fleet.forge.statuses[sha]
    assert status["state"] == "failure" and "not verified (escalated)" in status["description"]

"""What a fleet's ranking needs beyond the run's summary: each variant's diff size (git, on the
host, reading objects only) and its held-out checks, run at the end in a fresh sandbox."""

from __future__ import annotations

from pathlib import Path

import git

from harness.config.spec import Spec
from harness.fleet.ranking import DiffSize, outside
from harness.sandbox.limits import Confinement
from harness.sandbox.local import WorktreeSandbox

# Counting only: no external diff or textconv program (both are configurable by the agent's
# repository) is run, and two commits are compared, so no filter driver runs either.
_DIFF = ("--no-ext-diff", "--no-textconv", "--no-renames")


def branch_head(spec: Spec, branch: str) -> str | None:
    try:
        out: str = git.Git(spec.git_toplevel).rev_parse(
            "--verify", "--quiet", f"refs/heads/{branch}"
        )
    except git.GitCommandError:
        return None
    return out.strip() or None


def changed_files(spec: Spec, head: str, *, added_only: bool = False) -> list[str]:
    """Files (relative to the spec's `repo`) the head changes against the base."""
    only = ("--diff-filter=A",) if added_only else ()
    out: str = git.Git(spec.git_toplevel).diff(
        *_DIFF, "--name-only", *only, spec.base_commit, head, "--", str(spec.subdir)
    )
    return [str(Path(name).relative_to(spec.subdir)) for name in out.splitlines() if name]


def diff_size(spec: Spec, head: str) -> DiffSize:
    out: str = git.Git(spec.git_toplevel).diff(
        *_DIFF, "--numstat", spec.base_commit, head, "--", str(spec.subdir)
    )
    lines = 0
    stat = []
    for row in out.splitlines():
        added, deleted, name = row.split("\t", 2)
        lines += (int(added) if added.isdigit() else 0) + (int(deleted) if deleted.isdigit() else 0)
        stat.append(f"+{added} -{deleted} {name}")
    files = changed_files(spec, head)
    return DiffSize(
        lines=lines,
        files=len(files),
        outside_paths=outside(files, spec.paths),
        diffstat="\n".join(stat),
    )


def run_holdout(
    spec: Spec, head: str, workdir: Path, confinement: Confinement, timeout_s: float
) -> list[tuple[str, bool]]:
    """Each of the spec's held-out commands on the variant's committed tree, in a sandbox of
    its own (detached: nothing it does is kept); (command, passed). The agent never saw them."""
    at_head = spec.model_copy(update={"base_commit": head})
    sandbox = WorktreeSandbox.provision(
        at_head, None, workdir / "worktree", workdir / "scratch", confinement
    )
    try:
        results = []
        for i, command in enumerate(spec.holdout, start=1):
            done = sandbox.run(command, timeout_s, workdir / f"holdout-{i}.log")
            results.append((command, done.exit_code == 0 and not done.timed_out))
        return results
    finally:
        sandbox.teardown()

"""Tree entries a change may not add, whatever the gates say: what would make harness, or
whoever checks the branch out, enter or follow something the agent controls.

`review_tree(worktree, base)` reads the two commits' trees with git (through harness.git, no
file on disk is opened, no link followed, no nested repository entered), lists the worktree's
directories for nested `.git`s, and returns one policy Problem per finding:

- gitlink_added: a gitlink (mode 160000): a nested repository the agent made and committed, or
  a submodule. Its own config is the agent's (filters, fsmonitor, hooks), and git would enter it.
- nested_repository: a path with a `.git` component in the commit, or a `.git` file or directory
  below the top in the worktree on disk that no gitlink accounts for (git add skips one it
  cannot use, e.g. a `.git` file naming a missing directory, and commits the files beside it).
  The disk is only listed, entry by entry, never following a link.
- symlink_outside: a symlink whose target (its blob, read as bytes) is absolute or climbs out
  of the repository's top level: a later read or write through it reaches the host.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator
from pathlib import Path

from harness.config.policy import GuardFindingKind
from harness.git import Worktree
from harness.problems import Location, Problem, problem_type

_GITLINK = "160000"
_SYMLINK = "120000"


def review_tree(worktree: Worktree, base: str, head: str = "HEAD") -> list[Problem]:
    """The entries `head` adds or changes since `base` that the policy blocks by default."""
    findings: list[Problem] = []
    entries = worktree.entries_added(base, head)
    for mode, object_id, path in entries:
        if mode == _GITLINK:
            detail = f"{path} is a gitlink (a nested repository or submodule, commit {object_id})"
            findings.append(_problem("gitlink_added", detail, path))
        if any(part.lower() == ".git" for part in path.split("/")):
            detail = f"{path} lies in a nested .git: a repository inside the worktree"
            findings.append(_problem("nested_repository", detail, path))
        if mode == _SYMLINK:
            target = worktree.read_blob(object_id)
            if _points_outside(path, target):
                shown = target.decode("utf-8", errors="replace")
                detail = f"{path} is a symlink to {shown!r}, outside the repository"
                findings.append(_problem("symlink_outside", detail, path))
    gitlinks = {path for mode, _, path in entries if mode == _GITLINK}
    for path in _dot_gits(worktree.root):
        if posixpath.dirname(path) not in gitlinks:
            detail = f"{path} is a nested .git in the worktree: a repository inside it"
            findings.append(_problem("nested_repository", detail, path))
    return findings


def _dot_gits(root: Path, below: str = "") -> Iterator[str]:
    """Paths (from `root`) of entries named `.git` below its top, any case; symlinks are not
    followed and a `.git` is not entered."""
    try:
        entries = sorted(os.scandir(root / below if below else root), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        path = f"{below}/{entry.name}" if below else entry.name
        if entry.name.lower() == ".git":
            if below:  # the worktree's own .git file is harness's
                yield path
        elif entry.is_dir(follow_symlinks=False):
            yield from _dot_gits(root, path)


def _points_outside(link: str, target: bytes) -> bool:
    """Whether a link at `link` (from the top level) to `target` resolves outside the top
    level, judged on the names alone (a link through another link inside is judged there)."""
    if target.startswith(b"/") or not target:
        return True
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(link), target.decode("latin-1")))
    return joined == ".." or joined.startswith("../")


def _problem(kind: GuardFindingKind, detail: str, path: str) -> Problem:
    return Problem(
        type=problem_type("tree-" + kind.replace("_", "-")),
        title=kind.replace("_", " ").capitalize(),
        detail=detail,
        code=kind,
        location=Location(path=path),
        category="policy",
        retryable=True,
    )

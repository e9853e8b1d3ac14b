"""Warm gate caches (issue 18, items 2 and 5): a gate's tool cache is built once on the base and
each task's gate phase starts from its own copy of it; `harness check` starts its tools from the
tree's own caches, or from its last check's, and never writes the user's tree.

Real git worktrees, real bubblewrap sandboxes, real ruff and mypy. Gates that report whether
their cache dir was there are shell commands (`stamp` below), so no test depends on a timing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import TinyProject, commit_files, run_cli, tree_hashes

from harness.config.policy import GateConfig, load_policy
from harness.config.spec import Spec, load_spec
from harness.errors import InputError
from harness.gates.caches import CacheDir, GateCaches, cache_dirs
from harness.gates.preexisting import PreexistingFailures
from harness.sandbox.limits import DEFAULT_CONFINEMENT
from harness.sandbox.local import WorktreeSandbox

# Says whether build/cache held a stamp (and whose), then stamps it with the tree's `who` file
# (none on the base): what a tool does with its cache, made visible.
STAMP = (
    'if [ -f build/cache/stamp ]; then echo "warm $(cat build/cache/stamp)"; else echo cold; fi; '
    "mkdir -p build/cache && (cat who 2>/dev/null || echo base) > build/cache/stamp"
)
STAMP_GATE = GateConfig(name="stamp", kind="lint", command=STAMP, cache_dirs=["build/cache"])
RUFF_GATE = GateConfig(name="lint", kind="lint", command="ruff check .")


def gate(**fields: Any) -> GateConfig:
    return GateConfig.model_validate({"name": "g", "kind": "lint", **fields})


class Run:
    """A run's base runs and caches over the tiny project, and task sandboxes on its base."""

    def __init__(self, tiny: TinyProject) -> None:
        self.tiny = tiny
        commit_files(tiny.repo, {"proj/mod.py": "VALUE = 1\n"}, "a module for ruff")
        self.spec: Spec = load_spec(tiny.add_spec("cached", replay=False))
        self.run_dir = tiny.runs / "r"
        self.preexisting = PreexistingFailures(self.run_dir)
        self.caches = GateCaches(self.preexisting)
        self.sandboxes: list[WorktreeSandbox] = []

    def sandbox(self, name: str) -> WorktreeSandbox:
        box = WorktreeSandbox.provision(
            self.spec,
            f"harness/r/{name}",
            self.run_dir / "worktrees" / name,
            self.run_dir / "scratch" / name,
            self.caches.view(DEFAULT_CONFINEMENT),
        )
        self.sandboxes.append(box)
        return box

    def close(self) -> None:
        for box in self.sandboxes:
            box.teardown()
        self.caches.close()


@pytest.fixture
def run(tiny: TinyProject) -> Iterator[Run]:
    made = Run(tiny)
    yield made
    made.close()


def test_cache_dirs_default_to_the_tools_a_command_names_and_are_off_when_empty() -> None:
    assert cache_dirs(gate(command="mypy -O json .")) == [CacheDir(env="MYPY_CACHE_DIR")]
    assert cache_dirs(gate(command=".venv/bin/ruff check . && python -m mypy src")) == [
        CacheDir(env="MYPY_CACHE_DIR"),
        CacheDir(env="RUFF_CACHE_DIR"),
    ]
    assert cache_dirs(gate(command="pytest -q")) == []  # -p no:cacheprovider: it has none
    assert cache_dirs(gate(command="mypy .", cache_dirs=[])) == []
    assert cache_dirs(gate(command="x", cache_dirs=["build/c"])) == [CacheDir(tree="build/c")]


@pytest.mark.parametrize("entry", ["../outside", "/abs/cache", ".", "a/../../b", ""])
def test_a_cache_dir_outside_the_repo_directory_is_refused_naming_the_field(
    tmp_path: Path, entry: str
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f'gates: [{{name: t, kind: type, command: "mypy .", cache_dirs: ["{entry}"]}}]\n',
        encoding="utf-8",
    )
    with pytest.raises(InputError) as raised:
        load_policy(policy)
    message = str(raised.value)
    assert "gates.0.cache_dirs" in message and f"'{entry}'" in message and "\n" not in message


def test_a_tasks_first_gate_phase_starts_from_the_base_cache_and_its_writes_stay_its_own(
    run: Run,
) -> None:
    first, sibling = run.sandbox("first"), run.sandbox("sibling")
    (first.path / "who").write_text("first\n", encoding="utf-8")
    run.caches.seed(first, run.spec, [STAMP_GATE])
    assert run.preexisting.cache_snapshot(run.spec, STAMP_GATE) is not None
    assert first.run(STAMP, 30).output.strip() == "warm base"  # the base run's cache
    assert (first.path / "build/cache/stamp").read_text(encoding="utf-8") == "first\n"

    run.caches.seed(sibling, run.spec, [STAMP_GATE])
    assert sibling.run(STAMP, 30).output.strip() == "warm base"  # not the first task's write
    snapshot = run.preexisting.cache_snapshot(run.spec, STAMP_GATE)
    assert snapshot is not None
    assert (snapshot / "tree/build/cache/stamp").read_text(encoding="utf-8") == "base\n"
    # A scratch-dir cache too (ruff's, by default): each task its own copy of the base's.
    run.caches.seed(first, run.spec, [RUFF_GATE])
    run.caches.seed(sibling, run.spec, [RUFF_GATE])
    ruff_first, ruff_sibling = first.scratch / "ruff-cache", sibling.scratch / "ruff-cache"
    assert any(ruff_first.rglob("*")) and any(ruff_sibling.rglob("*"))
    assert os.stat(ruff_first).st_ino != os.stat(ruff_sibling).st_ino


def test_cache_links_the_agent_planted_are_not_followed_out_of_its_sandbox(
    run: Run, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    box = run.sandbox("hostile")
    (box.path / "build").mkdir()
    (box.path / "build/cache").symlink_to(outside)  # the tree's cache dir: a link out
    (box.scratch / "ruff-cache").symlink_to(outside)  # the scratch dir's too
    run.caches.seed(box, run.spec, [STAMP_GATE, RUFF_GATE])
    assert list(outside.iterdir()) == []  # nothing written through either link
    assert (box.path / "build/cache").is_symlink()  # the tree is left as the agent made it
    ruff_cache = box.scratch / "ruff-cache"  # the scratch cache is the base's, not the link
    assert not ruff_cache.is_symlink() and any(ruff_cache.rglob("CACHEDIR.TAG"))


def test_mypy_in_another_checkout_finds_the_base_cache_fresh(run: Run) -> None:
    commit_files(
        run.tiny.repo,
        {"proj/typed.py": "def double(x: int) -> int:\n    return 2 * x\n"},
        "typed",
    )
    spec = load_spec(run.tiny.add_spec("typed", replay=False))
    types = GateConfig(name="types", kind="type", command="mypy proj")
    run.spec = spec
    box = run.sandbox("typed")
    run.caches.seed(box, spec, [types])
    verbose = box.run("mypy -v proj", 300).output
    assert "Metadata fresh for builtins" in verbose
    # The checkout's file: fresh by mtime when both checkouts fell in one second, else by its
    # hash (mypy then only updates the mtime it recorded); never abandoned nor re-checked.
    fresh = ("Metadata fresh for typed:", "Updating mtime for typed:")
    assert any(line in verbose for line in fresh), verbose
    assert "Metadata abandoned" not in verbose and "Could not load cache" not in verbose


def test_empty_cache_dirs_turn_warm_caches_off_in_a_run(tiny: TinyProject) -> None:
    commit_files(tiny.repo, {"proj/mod.py": "VALUE = 1\n"}, "a module for ruff")
    ruff_seen = 'if [ -d "$RUFF_CACHE_DIR" ]; then echo warm; else echo cold; fi; ruff check .'
    tiny.write_policy(
        gates=[
            {"name": "off", "kind": "lint", "command": ruff_seen, "cache_dirs": []},
            {"name": "stamp", "kind": "lint", "command": STAMP, "cache_dirs": ["build/cache"]},
        ]
    )
    tiny.add_spec("one")
    assert tiny.run().exit_code == 0
    logs = tiny.runs / "r1" / "tasks" / "one" / "gates"
    assert "cold" in (logs / "attempt-1-off.log").read_text(encoding="utf-8")
    assert "warm base" in (logs / "attempt-1-stamp.log").read_text(encoding="utf-8")
    assert not (tiny.runs / "r1" / "caches").exists()  # removed at the run's end


def test_check_starts_from_the_trees_own_cache_and_never_writes_the_tree(
    tiny: TinyProject,
) -> None:
    # build/ is git-ignored: the snapshot harness checks has no copy of it.
    (tiny.repo / "build/cache").mkdir(parents=True)
    (tiny.repo / "build/cache/stamp").write_text("mine\n", encoding="utf-8")
    (tiny.repo / "who").write_text("check\n", encoding="utf-8")
    needs_cache = 'grep -q . build/cache/stamp && echo "$(cat who)" > build/cache/stamp'
    policy = tiny.write_policy(
        gates=[{"name": "c", "kind": "lint", "command": needs_cache, "cache_dirs": ["build/cache"]}]
    )
    before = tree_hashes(tiny.repo)
    args = ["check", str(tiny.repo), "--policy", str(policy), "--runs-dir", str(tiny.runs)]
    assert run_cli(args, cwd=tiny.root).exit_code == 0
    assert tree_hashes(tiny.repo) == before
    # The next check starts from what harness kept of this one, not from the tree's.
    (kept,) = (tiny.runs / ".check-caches").iterdir()
    assert (kept / "tree/build/cache/stamp").read_text(encoding="utf-8") == "check\n"
    assert run_cli(args, cwd=tiny.root).exit_code == 0
    assert tree_hashes(tiny.repo) == before

"""Policy's `limits:` and `sandbox.read_paths` reach every sandbox of a run, and the summary
records them (the sandboxes' own enforcement is tested in test_sandbox_hardening.py)."""

from __future__ import annotations

from pathlib import Path

from helpers import FINISH, WRITE_DONE, TinyProject, git

MIB = 1024 * 1024
FILL_TMP = "head -c 3000000 /dev/zero > /tmp/fill && test -f done.txt"


def _gate(command: str) -> list[dict[str, object]]:
    return [{"name": "done", "kind": "test", "command": command, "timeout_s": 30}]


def test_the_policys_tmp_cap_reaches_the_task_sandbox(tiny: TinyProject) -> None:
    tiny.add_spec("t")
    capped = tiny.write_policy(
        _gate(FILL_TMP),
        name="capped.yaml",
        limits={"tmp_bytes": 2 * MIB},
        budget={"max_attempts": 1},
    )
    assert tiny.run(policy=capped).exit_code == 0
    assert tiny.task("t")["outcome"] == "escalated"  # /tmp filled up at 2 MiB: the gate failed
    assert tiny.summary()["limits"]["tmp_bytes"] == 2 * MIB
    # The same gate under the default cap (512 MiB) passes: the cap is what failed it.
    roomy = tiny.write_policy(_gate(FILL_TMP), name="roomy.yaml", budget={"max_attempts": 1})
    assert tiny.run(policy=roomy, run_id="r2").exit_code == 0
    assert tiny.task("t", run_id="r2")["outcome"] == "verified"


def test_policy_read_paths_are_visible_to_gates_and_recorded(tiny: TinyProject) -> None:
    shared = Path("/srv/harness-test-read-path")
    shared.mkdir(parents=True, exist_ok=True)
    try:
        (shared / "data.txt").write_text("shared\n", encoding="utf-8")
        gate = _gate(f"grep -q shared {shared}/data.txt && test -f done.txt")
        tiny.add_spec("t")
        hidden = tiny.write_policy(gate, name="hidden.yaml", budget={"max_attempts": 1})
        assert tiny.run(policy=hidden).exit_code == 0
        assert tiny.task("t")["outcome"] == "escalated"  # /srv is not in the allowlisted view
        shown = tiny.write_policy(
            gate,
            name="shown.yaml",
            budget={"max_attempts": 1},
            sandbox={"read_paths": [str(shared)]},
        )
        assert tiny.run(policy=shown, run_id="r2").exit_code == 0
        assert tiny.task("t", run_id="r2")["outcome"] == "verified"
        assert tiny.summary("r2")["read_paths"] == [str(shared)]
    finally:
        (shared / "data.txt").unlink(missing_ok=True)
        shared.rmdir()


def test_a_file_over_the_size_limit_is_never_committed(tiny: TinyProject) -> None:
    big = {"tool": "write_file", "args": {"path": "big.txt", "content": "x" * 5000}}
    tiny.add_spec("t", attempts=[[big, WRITE_DONE, FINISH]])
    policy = tiny.write_policy(name="small.yaml", limits={"file_bytes": 1000})
    assert tiny.run(policy=policy).exit_code == 0
    task = tiny.task("t")
    assert task["outcome"] == "escalated"
    assert task["reason"] == "refused by policy on attempt 1: files over the size limit: big.txt"
    # Neither the attempt's commit nor the escalation's nor teardown's took it; the rest went.
    tree = git(tiny.repo, "ls-tree", "-r", "--name-only", "harness/r1/t").split()
    assert "done.txt" in tree and "big.txt" not in tree
    assert (tiny.runs / "r1" / "escalations" / "t.md").read_text().count("file-too-large") >= 1


def _write(path: str, size: int) -> dict[str, object]:
    return {"tool": "write_file", "args": {"path": path, "content": "x" * size}}


def test_a_change_over_the_worktree_limit_is_not_committed(tiny: TinyProject) -> None:
    # Four files of 900 bytes, each under the 1000-byte file cap, 3600 bytes together.
    parts = [_write(f"part-{n}.txt", 900) for n in range(4)]
    tiny.add_spec("t", attempts=[[*parts, WRITE_DONE, FINISH]])
    limits = {"file_bytes": 1000, "worktree_bytes": 3000}
    policy = tiny.write_policy(name="small.yaml", limits=limits)
    assert tiny.run(policy=policy).exit_code == 0
    task = tiny.task("t")
    assert task["outcome"] == "escalated"
    reason = task["reason"]
    assert reason.startswith("refused by policy on attempt 1: the worktree's files to commit ")
    assert "over limits.worktree_bytes (3,000 bytes)" in reason
    assert "part-0.txt (900)" in reason  # the biggest files, named with their sizes
    # Nothing of the change went into a commit: not the attempt's, the escalation's, teardown's.
    tree = git(tiny.repo, "ls-tree", "-r", "--name-only", "harness/r1/t").split()
    assert not {"done.txt", "part-0.txt"} & set(tree)
    report = (tiny.runs / "r1" / "escalations" / "t.md").read_text()
    assert "worktree-too-large" in report


def test_ignored_build_output_counts_toward_no_limit(tiny: TinyProject) -> None:
    # build/ is in the repository's .gitignore: neither its 1200-byte file (over the file
    # cap) nor its 3600 bytes (over the worktree cap) are what a commit takes.
    build = [_write(f"build/out-{n}.bin", 1200) for n in range(3)]
    tiny.add_spec("t", attempts=[[*build, WRITE_DONE, FINISH]])
    limits = {"file_bytes": 1000, "worktree_bytes": 3000}
    policy = tiny.write_policy(name="small.yaml", limits=limits)
    assert tiny.run(policy=policy).exit_code == 0
    assert tiny.task("t")["outcome"] == "verified"
    assert "done.txt" in git(tiny.repo, "ls-tree", "-r", "--name-only", "harness/r1/t").split()

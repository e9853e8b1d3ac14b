"""The local sandbox, for real: a git worktree per task and every command under bubblewrap."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import sys
import time
from pathlib import Path

import pytest
from helpers import TinyProject, branch_exists, git, init_repo, worktree_count

from harness.config.spec import Spec
from harness.sandbox import PathOutsideSandbox, resolve_inside
from harness.sandbox.local import WorktreeSandbox
from harness.sandbox.process import HEAD_BYTES, TAIL_BYTES

BRANCH = "harness/t/sandboxed"


def test_commands_run_under_bubblewrap_in_the_worktree(sandbox: WorktreeSandbox) -> None:
    assert sandbox.isolation == "bubblewrap"
    done = sandbox.run("pwd; cat README.md", timeout_s=30)
    assert done.exit_code == 0, done.output
    assert done.output.splitlines() == [str(sandbox.path), "# tiny"]
    assert not done.timed_out


def test_worktree_is_on_the_task_branch_at_base(
    sandbox: WorktreeSandbox, tiny: TinyProject
) -> None:
    assert git(sandbox.path, "rev-parse", "--abbrev-ref", "HEAD").strip() == BRANCH
    base = git(tiny.repo, "rev-parse", "HEAD").strip()
    assert git(sandbox.path, "rev-parse", "HEAD").strip() == base
    assert worktree_count(tiny.repo) == 2


def test_sandboxed_command_can_write_inside_the_worktree(sandbox: WorktreeSandbox) -> None:
    done = sandbox.run("mkdir -p out && echo hello > out/made.txt", timeout_s=30)
    assert done.exit_code == 0, done.output
    assert (sandbox.path / "out" / "made.txt").read_text(encoding="utf-8") == "hello\n"


def test_sandboxed_command_cannot_write_to_the_source_checkout(
    sandbox: WorktreeSandbox, tiny: TinyProject
) -> None:
    readme = tiny.repo / "README.md"
    before = readme.read_bytes()
    sandbox.run(f"echo pwned > {readme}; echo pwned >> {readme}", timeout_s=30)
    assert readme.read_bytes() == before


def test_sandboxed_command_cannot_write_to_the_repositorys_git_dir(
    sandbox: WorktreeSandbox, tiny: TinyProject
) -> None:
    config = tiny.repo / ".git" / "config"
    before = config.read_bytes()
    hook = tiny.repo / ".git" / "hooks" / "post-commit"
    done = sandbox.run(f"echo '[x]' >> {config}; echo 'touch /pwned' > {hook}", timeout_s=30)
    assert done.exit_code != 0
    assert config.read_bytes() == before
    assert not hook.exists()


def test_sandboxed_command_cannot_write_to_a_tmp_file_outside(
    sandbox: WorktreeSandbox, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("original\n", encoding="utf-8")
    sandbox.run(f"echo pwned > {outside}; rm -f {outside}", timeout_s=30)
    assert outside.read_text(encoding="utf-8") == "original\n"


def test_host_outside_tmp_is_read_only(sandbox: WorktreeSandbox) -> None:
    # `: >>` opens for append and writes nothing, so even a broken sandbox changes no byte.
    target = Path(sys.prefix) / "pyvenv.cfg"  # harness's own venv
    assert os.access(target, os.W_OK), "precondition: the test process can write there"
    done = sandbox.run(f": >> {target}", timeout_s=30)
    assert done.exit_code != 0
    assert "Read-only file system" in done.output


def test_sandboxed_command_cannot_reach_the_host_network(
    sandbox: WorktreeSandbox, http_server: int
) -> None:
    with socket.create_connection(("127.0.0.1", http_server), 2):
        pass  # reachable from the test process
    control = sandbox.run("python3 -c 'import socket; print(socket.gethostname() != \"\")'", 30)
    assert control.exit_code == 0 and "True" in control.output, control.output
    script = f'import socket; socket.create_connection(("127.0.0.1", {http_server}), 2)'
    done = sandbox.run(f"python3 -c '{script}'", timeout_s=30)
    assert done.exit_code != 0, done.output
    assert "Error" in done.output


def test_secrets_are_scrubbed_from_the_environment(
    sandbox: WorktreeSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_values = {
        "FOO_TOKEN": "tok-" + secrets.token_hex(8),
        "AWS_SECRET_ACCESS_KEY": "aws-" + secrets.token_hex(8),
        "ANTHROPIC_API_KEY": "sk-ant-" + secrets.token_hex(8),
    }
    for name, value in secret_values.items():
        monkeypatch.setenv(name, value)
    done = sandbox.run("env", timeout_s=30)
    assert done.exit_code == 0
    assert "PATH=" in done.output  # the environment was printed
    for name, value in secret_values.items():
        assert name not in done.output
        assert value not in done.output


def _processes_with(token: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if token.encode() in cmdline:
            found.append(int(entry.name))
    return found


def test_timeout_kills_the_command_and_its_children(sandbox: WorktreeSandbox) -> None:
    token = f"31.{secrets.randbelow(10**6):06d}"  # a sleep argument no other process uses
    command = f"(echo started > child-started; exec sleep {token}) & sleep 30"
    done = sandbox.run(command, timeout_s=1)
    assert done.timed_out
    assert done.exit_code != 0
    assert (sandbox.path / "child-started").exists(), "the child never started"
    deadline = time.monotonic() + 10
    while _processes_with(token) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_with(token) == [], "the background child outlived the timeout"


def test_huge_output_is_capped_in_memory_and_complete_in_the_log(
    sandbox: WorktreeSandbox, tmp_path: Path
) -> None:
    size = 5_000_000
    log = tmp_path / "logs" / "big.log"
    command = f"echo FIRST-LINE; head -c {size} /dev/zero | tr '\\0' x; echo; echo LAST-LINE"
    done = sandbox.run(command, timeout_s=60, log_path=log)
    assert done.exit_code == 0
    total = len("FIRST-LINE\n") + size + len("\nLAST-LINE\n")
    assert log.stat().st_size == total
    assert done.log_path == log
    assert done.output_cut_bytes == total - HEAD_BYTES - TAIL_BYTES
    assert len(done.output) < HEAD_BYTES + TAIL_BYTES + 200
    assert done.output.startswith("FIRST-LINE\n")
    assert done.output.rstrip().endswith("LAST-LINE")
    assert "bytes of output cut" in done.output


def test_non_utf8_output_does_not_crash(sandbox: WorktreeSandbox) -> None:
    done = sandbox.run(r"printf '\377\376 bad bytes\n'; echo still-ok", timeout_s=30)
    assert done.exit_code == 0
    assert "\ufffd" in done.output
    assert "still-ok" in done.output


def test_exit_codes_are_reported(sandbox: WorktreeSandbox) -> None:
    assert sandbox.run("exit 7", timeout_s=30).exit_code == 7


def test_teardown_commits_work_removes_the_worktree_and_keeps_the_branch(
    sandbox: WorktreeSandbox, tiny: TinyProject
) -> None:
    base = git(tiny.repo, "rev-parse", "HEAD").strip()
    sandbox.write("notes/wip.txt", "work in progress\n")
    done = sandbox.run("echo from-sandbox > made.txt", timeout_s=30)
    assert done.exit_code == 0
    root, scratch = sandbox.root, sandbox.scratch
    sandbox.teardown()
    assert not root.exists()
    assert not scratch.exists()
    assert worktree_count(tiny.repo) == 1
    assert branch_exists(tiny.repo, BRANCH)
    assert git(tiny.repo, "show", f"{BRANCH}:notes/wip.txt") == "work in progress\n"
    assert git(tiny.repo, "show", f"{BRANCH}:made.txt") == "from-sandbox\n"
    assert git(tiny.repo, "rev-parse", f"{BRANCH}~1").strip() == base
    # The user's checkout stays on main, clean.
    assert git(tiny.repo, "rev-parse", "--abbrev-ref", "HEAD").strip() == "main"
    assert git(tiny.repo, "status", "--porcelain") == ""
    sandbox.teardown()  # idempotent
    assert branch_exists(tiny.repo, BRANCH)


def test_teardown_without_changes_makes_no_commit(
    sandbox: WorktreeSandbox, tiny: TinyProject
) -> None:
    base = git(tiny.repo, "rev-parse", "HEAD").strip()
    sandbox.teardown()
    assert git(tiny.repo, "rev-parse", BRANCH).strip() == base


def test_sandboxed_command_cannot_make_harness_run_code_on_the_host(
    sandbox: WorktreeSandbox, tmp_path: Path
) -> None:
    """Harness runs git in the worktree outside the sandbox (status, add, commit). Whatever a
    sandboxed command writes there must not turn those git calls into host code execution:
    here it points the worktree's `.git` file at a repository it made, whose config sets
    `core.fsmonitor` (a command git runs on `git status`)."""
    marker = tmp_path / "ran-on-host"  # under /tmp: invisible inside the sandbox
    command = (
        "git init -q evil"
        f" && git -C evil config core.fsmonitor 'touch {marker}; false'"
        ' && echo "gitdir: $PWD/evil/.git" > .git'
    )
    done = sandbox.run(command, timeout_s=30)
    # Refused (the .git file is read-only in the sandbox) or not, git must not run it later.
    assert done.exit_code != 0 or (sandbox.root / "evil").exists(), done.output
    try:
        with contextlib.suppress(Exception):  # refusing is fine; running the command is not
            sandbox.teardown()
        assert not marker.exists(), "a command written by the sandbox ran on the host"
    finally:
        shutil.rmtree(sandbox.root, ignore_errors=True)  # so the fixture's teardown is a no-op


# --- resolve_inside -------------------------------------------------------------------------


def test_resolve_inside_accepts_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    assert resolve_inside(tmp_path, "a/b.txt") == tmp_path.resolve() / "a" / "b.txt"
    assert resolve_inside(tmp_path, "a/../c.txt") == tmp_path.resolve() / "c.txt"
    assert resolve_inside(tmp_path, ".") == tmp_path.resolve()


@pytest.mark.parametrize("relpath", ["/etc/passwd", "../x", "a/../../x", "..", ""])
def test_resolve_inside_refuses_escapes(tmp_path: Path, relpath: str) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    with pytest.raises(PathOutsideSandbox):
        resolve_inside(root, relpath)


def test_resolve_inside_refuses_a_symlink_pointing_outside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.txt").write_text("secret\n", encoding="utf-8")
    (root / "link.txt").symlink_to(tmp_path / "secret.txt")
    (root / "linkdir").symlink_to(tmp_path)
    (root / "inner.txt").write_text("x\n", encoding="utf-8")
    (root / "ok-link").symlink_to(root / "inner.txt")
    with pytest.raises(PathOutsideSandbox):
        resolve_inside(root, "link.txt")
    with pytest.raises(PathOutsideSandbox):
        resolve_inside(root, "linkdir/secret.txt")
    assert resolve_inside(root, "ok-link") == (root / "inner.txt").resolve()


def test_sandbox_read_and_write_refuse_escapes(sandbox: WorktreeSandbox, tmp_path: Path) -> None:
    with pytest.raises(PathOutsideSandbox):
        sandbox.write("../escaped.txt", "x")
    assert not (sandbox.path.parent / "escaped.txt").exists()
    with pytest.raises(PathOutsideSandbox):
        sandbox.read("/etc/hostname")


def test_an_adopted_worktree_is_known_by_the_repositorys_record_not_its_git_file(
    sandbox: WorktreeSandbox, tiny_spec: Spec, tmp_path: Path
) -> None:
    # The agent's tree holds the .git file: a resumed task must not let it name the repository.
    recorded = sandbox.worktree.git_dir
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "README.md").write_text("elsewhere\n", encoding="utf-8")
    elsewhere = init_repo(tmp_path / "elsewhere")
    (sandbox.root / ".git").write_text(f"gitdir: {elsewhere / '.git'}\n", encoding="utf-8")
    adopted = WorktreeSandbox.adopt(tiny_spec, sandbox.root, sandbox.scratch)
    assert adopted.worktree.git_dir == recorded
    (sandbox.root / ".git").write_text(f"gitdir: {recorded}\n", encoding="utf-8")

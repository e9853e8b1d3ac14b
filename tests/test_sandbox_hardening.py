"""Issue 11, items 2 and 3: what a sandboxed command can see, call and use (real bubblewrap)."""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.sandbox import Completed
from harness.sandbox.confined import ConfinedDirectory
from harness.sandbox.limits import MIB, SandboxLimits, commit_check


def confined(tmp_path: Path, **options: object) -> ConfinedDirectory:
    worktree = tmp_path / "worktree"
    scratch = tmp_path / "scratch"
    worktree.mkdir(exist_ok=True)
    scratch.mkdir(exist_ok=True)
    box = ConfinedDirectory(worktree, worktree, scratch, **options)  # type: ignore[arg-type]
    assert box.isolation == "bubblewrap"
    return box


def python(box: ConfinedDirectory, script: str, timeout_s: float = 60) -> Completed:
    box.write("probe.py", textwrap.dedent(script))
    return box.run("python probe.py", timeout_s=timeout_s)


@pytest.fixture
def host_dir() -> Iterator[Path]:
    """A directory in root's home, the way ~/.ssh or ~/.aws sit on a real host."""
    path = Path("/root") / f"harness-test-{secrets.token_hex(6)}"
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_secrets_on_the_host_are_not_visible(tmp_path: Path, host_dir: Path) -> None:
    token = secrets.token_hex(16)
    planted = [host_dir / ".ssh" / "id_ed25519", host_dir / ".aws" / "credentials"]
    etc_secret = Path("/etc") / f"harness-test-{secrets.token_hex(6)}"
    other_worktree = tmp_path / "other-task" / "notes.txt"
    planted += [etc_secret, other_worktree]
    try:
        for path in planted:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(token)
        box = confined(tmp_path)
        paths = " ".join(str(path) for path in [*planted, Path("/etc/shadow")])
        result = box.run(f"for f in {paths}; do cat $f; done", timeout_s=30)
        home = box.run("ls -a /root", timeout_s=30)
    finally:
        etc_secret.unlink()
    assert token not in result.output
    assert "root:" not in result.output  # /etc/shadow's first line
    assert host_dir.name not in home.output


def test_policy_read_paths_are_visible_read_only(tmp_path: Path, host_dir: Path) -> None:
    (host_dir / "data.txt").write_text("shared dataset")
    box = confined(tmp_path, read_paths=[host_dir])
    result = box.run(f"cat {host_dir}/data.txt && touch {host_dir}/x", timeout_s=30)
    assert "shared dataset" in result.output
    assert result.exit_code != 0
    assert not (host_dir / "x").exists()


def test_a_host_unix_socket_outside_tmp_is_not_connectable(tmp_path: Path, host_dir: Path) -> None:
    address = host_dir / "agent.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(address))
    server.listen(1)
    try:
        box = confined(tmp_path, read_paths=[host_dir])  # even a path the view includes
        result = python(
            box,
            f"""
            import socket
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect({str(address)!r})
            print("connected")
            """,
        )
    finally:
        server.close()
    assert "connected" not in result.output
    assert "PermissionError" in result.output
    assert result.exit_code != 0


def test_ptrace_mount_keyctl_and_bpf_are_refused(tmp_path: Path) -> None:
    box = confined(tmp_path)
    result = python(
        box,
        """
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        os.makedirs("/tmp/m", exist_ok=True)
        attr = (ctypes.c_uint32 * 32)(2, 4, 4, 1)  # BPF_MAP_TYPE_ARRAY, one 4-byte entry
        calls = {
            "ptrace": lambda: libc.ptrace(0, 0, 0, 0),  # PTRACE_TRACEME
            "mount": lambda: libc.mount(b"none", b"/tmp/m", b"tmpfs", 0, None),
            "keyctl": lambda: libc.syscall(250, 0, -3, 1),  # KEYCTL_GET_KEYRING_ID, session
            "bpf": lambda: libc.syscall(321, 0, ctypes.byref(attr), 128),  # BPF_MAP_CREATE
        }
        for name, call in calls.items():
            ctypes.set_errno(0)
            code = call()
            print(name, "refused" if code == -1 and ctypes.get_errno() == 1 else f"ran {code}")
        """,
    )
    for name in ("ptrace", "mount", "keyctl", "bpf"):
        assert f"{name} refused" in result.output, result.output


def test_a_memory_bomb_fails_and_harness_survives(tmp_path: Path) -> None:
    box = confined(tmp_path, limits=SandboxLimits(memory_bytes=128 * MIB))
    result = python(box, "block = bytearray(1024 * 1024 * 1024)\nprint('allocated')")
    assert "allocated" not in result.output
    assert result.exit_code != 0 and not result.timed_out
    assert box.run("echo alive", timeout_s=30).output.strip() == "alive"


def test_the_memory_limit_holds_for_the_whole_sandbox(tmp_path: Path) -> None:
    # Two commands at once, each holding 80 MiB: under the 128 MiB limit alone, not together.
    box = confined(tmp_path, limits=SandboxLimits(memory_bytes=128 * MIB))
    box.write("hold.py", "import sys, time\nheld = b'x' * (80 * 1024 * 1024)\nprint('held')\n")
    first_holds = "python -c \"exec(open('hold.py').read()); open('first', 'w')\n"
    first_holds += "import os, time\nwhile not os.path.exists('second'): time.sleep(0.05)\""
    second_waits = "while [ ! -f first ]; do sleep 0.05; done; python hold.py; touch second"
    results: dict[str, Completed] = {}

    def run(name: str, command: str) -> None:
        results[name] = box.run(command, timeout_s=60)

    threads = [
        threading.Thread(target=run, args=("first", first_holds)),
        threading.Thread(target=run, args=("second", second_waits)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not any(result.timed_out for result in results.values()), results
    held = [name for name, result in results.items() if result.exit_code == 0]
    assert len(held) < 2, results  # the sandbox's memory cgroup stopped one of them
    assert box.run("python hold.py", timeout_s=60).output.strip() == "held"  # alone, it fits


def test_a_command_holds_no_fd_of_harness_or_its_spawner(tmp_path: Path) -> None:
    # The spawner takes requests on a socket and runs them on the host: a command holding it
    # (or a reply socket) could start anything outside the sandbox.
    box = confined(tmp_path)
    box.run("true", timeout_s=30)  # a second command, while the spawner holds more fds
    result = box.run("for fd in /proc/self/fd/*; do readlink $fd; done", timeout_s=30)
    held = result.output.split()
    assert held[:3] == ["/dev/null", held[1], held[1]] and held[1].startswith("pipe:"), held
    assert len(held) == 3, held  # stdin, stdout, stderr: nothing else


def test_a_fork_bomb_fails(tmp_path: Path) -> None:
    box = confined(tmp_path, limits=SandboxLimits(pids=32))
    result = python(
        box,
        """
        import os, time
        for n in range(200):
            if os.fork() == 0:
                time.sleep(3)
                os._exit(0)
        print("forked 200")
        """,
    )
    assert "forked 200" not in result.output
    assert "BlockingIOError" in result.output
    assert result.exit_code != 0 and not result.timed_out


def test_a_cpu_spinner_is_killed_at_its_cpu_limit(tmp_path: Path) -> None:
    box = confined(tmp_path, limits=SandboxLimits(cpu_seconds=1))
    result = python(box, "while True:\n    pass\n", timeout_s=120)
    assert not result.timed_out
    assert result.exit_code != 0


def test_filling_tmp_stops_at_its_size_cap(tmp_path: Path) -> None:
    box = confined(tmp_path, limits=SandboxLimits(tmp_bytes=4 * MIB))
    result = box.run("head -c 64000000 /dev/zero > /tmp/fill && echo filled", timeout_s=60)
    assert "filled" not in result.output
    assert "No space left" in result.output
    assert result.exit_code != 0


def test_commands_run_in_cgroups_that_are_removed_at_exit(tmp_path: Path) -> None:
    script = f"""
from pathlib import Path
from harness.sandbox import limits
from harness.sandbox.confined import ConfinedDirectory
where = Path({str(tmp_path)!r})
box = ConfinedDirectory(where, where, where)
for _ in range(3):  # one sandbox, one pair of cgroups for all its commands
    box.run("head -c 20000000 /dev/zero | cat > /dev/null", timeout_s=30)
for group in limits._MADE:
    usage = group / "memory.max_usage_in_bytes"
    print(group, usage.read_text().strip() if usage.exists() else "-")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    lines = [line.split() for line in done.stdout.splitlines()]
    assert sorted(Path(path).parent.name for path, _ in lines) == ["memory", "pids"], done
    assert all(usage == "-" or int(usage) > 0 for _, usage in lines)  # the command was in it
    assert not any(Path(path).exists() for path, _ in lines)


def test_cgroups_a_killed_harness_left_are_removed(tmp_path: Path) -> None:
    # A harness killed with SIGKILL never ran its exit handlers: its cgroups stayed.
    dead = subprocess.Popen(["true"])
    dead.wait()
    left = [
        Path("/sys/fs/cgroup", kind, f"harness-{dead.pid}-0dead0") for kind in ("memory", "pids")
    ]
    for group in left:
        group.mkdir()
    script = f"""
from pathlib import Path
from harness.sandbox.confined import ConfinedDirectory
where = Path({str(tmp_path)!r})
print(ConfinedDirectory(where, where, where).run("true", timeout_s=30).exit_code)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.strip() == "0", done
    assert not any(group.exists() for group in left)


def test_size_caps_count_links_as_links(tmp_path: Path) -> None:
    outside = tmp_path / "outside.bin"
    with outside.open("wb") as sparse:
        sparse.truncate(10 * MIB)
    tree = tmp_path / "tree"
    (tree / "data").mkdir(parents=True)
    with (tree / "data" / "big.bin").open("wb") as sparse:
        sparse.truncate(3 * MIB)
    (tree / "small.txt").write_text("ok")
    (tree / "link").symlink_to(outside)  # counted as the link, never as its target
    files = ["data/big.bin", "small.txt", "link", "deleted.txt", "data"]

    check = commit_check(SandboxLimits(file_bytes=2 * MIB, worktree_bytes=4 * MIB))
    found = check(tree, files)
    assert found is not None and found.paths == ("data/big.bin",) and not found.everything
    tighter = commit_check(SandboxLimits(file_bytes=4 * MIB, worktree_bytes=2 * MIB))(tree, files)
    assert tighter is not None and tighter.everything and tighter.kind == "worktree-too-large"
    assert f"total {3 * MIB + 2 + len(str(outside)):,} bytes" in tighter.reason
    assert commit_check(SandboxLimits(file_bytes=4 * MIB))(tree, files) is None


def test_policy_has_limits_and_read_paths_with_defaults() -> None:
    from harness.config.policy import Policy

    gates = [{"name": "tests", "kind": "test", "command": "pytest"}]
    default = Policy.model_validate({"gates": gates})
    assert default.limits == SandboxLimits() and default.sandbox.read_paths == []
    custom = Policy.model_validate(
        {"gates": gates, "limits": {"pids": 64}, "sandbox": {"read_paths": ["/opt/tools"]}}
    )
    assert custom.limits.pids == 64 and custom.sandbox.read_paths == ["/opt/tools"]
    for bad in ({"limits": {"pid": 64}}, {"sandbox": {"read_paths": ["relative"]}}):
        with pytest.raises(ValueError):
            Policy.model_validate({"gates": gates, **bad})


def test_this_machine_has_no_hardening_gaps() -> None:
    # The CI machine has python3-seccomp and cgroups v1 as root: nothing is silently missing.
    from harness.sandbox.bubblewrap import hardening_gaps

    assert hardening_gaps() == ()


def test_nested_paths_keep_their_own_mode(tmp_path: Path) -> None:
    # A read path holding the worktree leaves it writable; a read-only path inside stays so.
    worktree = tmp_path / "worktree"
    (worktree / "vendor").mkdir(parents=True)
    box = confined(tmp_path, read_paths=[tmp_path], readable=[worktree / "vendor"])
    result = box.run("touch ok && touch vendor/no", timeout_s=30)
    assert (worktree / "ok").exists()
    assert not (worktree / "vendor" / "no").exists() and result.exit_code != 0


def test_honest_tools_still_work_under_the_filter_and_limits(tmp_path: Path) -> None:
    # A regression guard, not a reproduction: git, ruff, mypy and pytest all run confined.
    box = confined(tmp_path)
    box.write("calc.py", "def add(a: int, b: int) -> int:\n    return a + b\n")
    box.write(
        "test_calc.py",
        "from calc import add\n\n\ndef test_add() -> None:\n    assert add(1, 2) == 3\n",
    )
    steps = [
        "git init -q . && git add -A && git -c user.name=t -c user.email=t@t commit -qm c",
        "ruff check calc.py test_calc.py",
        "mypy --strict calc.py",
        "python -m pytest -q test_calc.py",
    ]
    for step in steps:
        result = box.run(step, timeout_s=120)
        assert result.exit_code == 0, (step, result.output)

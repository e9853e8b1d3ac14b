"""harness/sandbox/host_files.py, and the command agent's prompt through it: harness's host
process never writes, reads or follows a name the agent planted in a directory it can write."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from helpers import TinyProject, git

from harness.agents.tools import SandboxTools
from harness.errors import InfrastructureError
from harness.sandbox.host_files import create_new, read_regular
from harness.sandbox.local import WorktreeSandbox

# Attempt 1 plants a symlink at every name the next prompt could have, pointing at a host file,
# and leaves the gate failing; attempt 2 does the work and shows the prompt it was handed.
PLANT = (
    'd=$(dirname "{prompt_file}"); '
    'if [ -e "$d/attempt-1-done" ]; then cp "{prompt_file}" prompt-seen.md; echo made > done.txt; '
    'else touch "$d/attempt-1-done"; ln -s "%s" "$d/prompt-attempt-2.md"; fi'
)


def test_a_symlink_at_the_next_prompts_name_does_not_redirect_the_write(
    tiny: TinyProject, tmp_path: Path
) -> None:
    host_file = tmp_path / "host-owned.txt"
    host_file.write_text("the host's own content\n")
    tiny.write_policy(agent={"kind": "command", "command": ["sh", "-c", PLANT % host_file]})
    tiny.add_spec("plant", replay=False)
    result = tiny.run()

    assert host_file.read_text() == "the host's own content\n", "the prompt went through a link"
    assert result.exit_code == 0, result.stderr
    task = tiny.task("plant")
    assert (task["outcome"], task["attempts"]) == ("verified", 2)
    assert "attempt: 2" in git(tiny.repo, "show", "harness/r1/plant:prompt-seen.md")


def test_create_new_never_writes_through_a_planted_name(tmp_path: Path) -> None:
    scratch, target = tmp_path / "scratch", tmp_path / "target"
    scratch.mkdir()
    target.write_text("kept\n")
    written = create_new(scratch, "prompt", ".md", "hello\n")
    assert written.parent == scratch and written.name.startswith("prompt-")
    assert written.read_text() == "hello\n" and not written.is_symlink()
    assert target.read_text() == "kept\n"


def test_create_new_refuses_a_directory_that_is_a_symlink(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "scratch").symlink_to(elsewhere)
    with pytest.raises(InfrastructureError, match="without following a link"):
        create_new(tmp_path / "scratch", "prompt", ".md", "hello\n")
    assert list(elsewhere.iterdir()) == []


def test_read_regular_reads_files_only_and_follows_nothing(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("host secret\n")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "report.xml").write_text("<testsuite/>")
    (scratch / "link.xml").symlink_to(secret)
    os.mkfifo(scratch / "fifo.xml")
    (tmp_path / "linked-dir").symlink_to(tmp_path)

    assert read_regular(scratch / "report.xml", 5) == b"<test"
    assert read_regular(scratch / "link.xml", 100) is None
    assert read_regular(scratch / "fifo.xml", 100) is None  # would block a plain open
    assert read_regular(scratch / "missing.xml", 100) is None
    assert read_regular(tmp_path / "linked-dir" / "secret", 100) is None


def test_search_skips_a_fifo_the_agent_made_in_its_tree(sandbox: WorktreeSandbox) -> None:
    # A plain open of a FIFO with no writer blocks harness's host process for good.
    done = sandbox.run(
        "mkdir -p src && mkfifo src/pipe.py && echo 'needle = 1' > src/found.py", timeout_s=30
    )
    assert done.exit_code == 0, done.output
    tools = SandboxTools(sandbox, deadline=time.monotonic() + 120, log_dir=sandbox.scratch)
    call = tools.call("search", {"pattern": "needle", "path": "src"})
    assert call.ok and call.result == "src/found.py:1: needle = 1"

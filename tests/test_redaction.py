"""Redaction everywhere harness writes, and command logs capped on disk (issue 11, items 5, 3).

A secret planted as an environment variable's value reaches a gate's output, an agent
command's output and a traceback; after a real `harness run`, no file under runs/ and nothing
in the store (the sqlite file, its WAL included) holds its bytes.
"""

from __future__ import annotations

import random
import resource
from pathlib import Path

import pytest
from helpers import FINISH, WRITE_DONE, TinyProject, commit_files

from harness import redact
from harness.parsers import _without_cut_lines
from harness.publish.local import LocalPublisher
from harness.redact import Redactor, StreamRedactor
from harness.sandbox.local import WorktreeSandbox
from harness.sandbox.process import HEAD_BYTES, LOG_MAX_BYTES, TAIL_BYTES

SECRET = "s3cr3t-planted-value-7f3a9c2e51"


def _leaks(tiny: TinyProject) -> list[str]:
    """Every file under runs/ (the store's harness.db, -wal and -shm are there) with the secret."""
    found = [path for path in tiny.runs.rglob("*") if path.is_file()]
    assert any(path.name == "harness.db" for path in found)
    return [str(path) for path in found if SECRET.encode() in path.read_bytes()]


@pytest.fixture
def planted(tiny: TinyProject, monkeypatch: pytest.MonkeyPatch) -> TinyProject:
    """The secret in the environment and, since sandboxes never see that, in a repo file
    that agent commands and tests print (as if it had been copied there)."""
    monkeypatch.setenv("DEMO_API_TOKEN", SECRET)
    commit_files(tiny.repo, {"config.txt": f"token = {SECRET}\n"})
    return tiny


def test_a_secret_printed_by_a_failing_test_gate_is_nowhere(planted: TinyProject) -> None:
    gate = {"name": "tests", "kind": "test", "command": "cat config.txt; false", "timeout_s": 30}
    planted.write_policy(gates=[gate])
    planted.add_spec("t", attempts=[[WRITE_DONE, FINISH], [FINISH]])
    planted.run()
    task = planted.task("t")
    assert task["outcome"] == "escalated" and task["attempts"] == 2
    # The gate did print it: its log and the escalation record quote the line, redacted.
    logs = "".join(p.read_text() for p in (planted.runs / "r1").rglob("*.log"))
    assert "token = [REDACTED:DEMO_API_TOKEN]" in logs
    assert _leaks(planted) == []


def test_a_secret_printed_by_an_agent_command_is_nowhere(planted: TinyProject) -> None:
    run = {"tool": "run", "args": {"command": "cat config.txt"}}
    planted.add_spec("t", attempts=[[run, WRITE_DONE, FINISH]])
    assert planted.run().exit_code == 0
    assert planted.task("t")["outcome"] == "verified"
    logs = [p.read_text() for p in (planted.runs / "r1").rglob("run-*.log")]
    assert logs and all("token = [REDACTED:DEMO_API_TOKEN]" in log for log in logs)
    assert _leaks(planted) == []


def test_a_secret_in_a_traceback_is_nowhere(
    planted: TinyProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(self: LocalPublisher, *_: object) -> str:
        raise RuntimeError(f"could not publish with {SECRET}")

    monkeypatch.setattr(LocalPublisher, "open_pr", fail)
    planted.add_spec("t")
    assert planted.run().exit_code == 1
    assert planted.task("t")["outcome"] == "error"
    error_log = next((planted.runs / "r1").rglob("error.log")).read_text()
    assert "RuntimeError: could not publish with [REDACTED:DEMO_API_TOKEN]" in error_log
    # The error's reason reaches the checkpoint and the task result too: redacted there.
    assert _leaks(planted) == []


def test_a_secret_split_across_chunks_is_still_redacted() -> None:
    redactor = Redactor({"DEMO_API_TOKEN": SECRET})
    line = f"x{SECRET}y sk-ant-api03-abcdefghijklmnop\n".encode()
    data = b"".join(random.randbytes(300).replace(b"s", b"t") + line for _ in range(100))
    for seed in range(50):
        chooser = random.Random(seed)
        stream, out, at = StreamRedactor(redactor), b"", 0
        while at < len(data):
            size = chooser.randint(1, 80)
            out += stream.feed(data[at : at + size])
            at += size
        out += stream.close()
        assert out == redactor.final(data)
        assert SECRET.encode() not in out and b"sk-ant-api03" not in out


def test_a_huge_output_leaves_a_capped_log_with_head_tail_and_a_note(
    sandbox: WorktreeSandbox, tmp_path: Path
) -> None:
    cap = LOG_MAX_BYTES
    size = 200 * 1024 * 1024
    log = tmp_path / "logs" / "huge.log"
    command = f"echo FIRST-LINE; head -c {size} /dev/zero | tr '\\0' x; echo; echo LAST-LINE"
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    done = sandbox.run(command, timeout_s=120, log_path=log)
    assert done.exit_code == 0
    # Streamed: the harness never held the output (ru_maxrss is in KiB on Linux).
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 64 * 1024
    text = log.read_text()
    total = len("FIRST-LINE\n") + size + len("\nLAST-LINE\n")
    note = next(line for line in text.splitlines() if "bytes of output cut here" in line)
    assert log.stat().st_size <= cap + len(note.encode()) + 2
    assert text.startswith("FIRST-LINE\n") and text.endswith("\nLAST-LINE\n")
    assert f"[… {total - cap} bytes of output cut here" in note
    # A gate's problems are parsed from this log: the parser drops the note and the two
    # partial lines beside it.
    assert "[… output cut …]\n" in _without_cut_lines(text)
    # The in-memory copy keeps its own, smaller head and tail, and says how much it cut.
    assert done.output_cut_bytes == total - HEAD_BYTES - TAIL_BYTES
    assert done.output.startswith("FIRST-LINE\n") and done.output.endswith("LAST-LINE\n")


def test_a_value_handed_to_a_command_agent_is_redacted_whatever_its_name(
    tiny: TinyProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    # AGENT_CREDS is not a secret-looking name: it is redacted because the agent was handed it.
    monkeypatch.setenv("AGENT_CREDS", SECRET)
    script = 'echo "using $AGENT_CREDS"; echo made > done.txt'
    agent = {"kind": "command", "command": ["sh", "-c", script], "env": ["AGENT_CREDS"]}
    tiny.write_policy(agent=agent)
    tiny.add_spec("cli", replay=False)
    assert tiny.run().exit_code == 0
    log = next((tiny.runs / "r1").rglob("command.log")).read_text()
    assert "using [REDACTED:AGENT_CREDS]" in log
    assert _leaks(tiny) == []


def test_a_token_file_is_redacted_once_remembered(tmp_path: Path) -> None:
    # The hook for the token files a policy or forge names: their contents join every writer's.
    token = tmp_path / "forge-token"
    token.write_text("ghx-file-token-0123456789\n", encoding="utf-8")
    redact.remember_files([token, tmp_path / "not-there"])
    shown = redact.current().text("auth ghx-file-token-0123456789")
    assert shown == "auth [REDACTED:FILE:forge-token]"


def test_a_remembered_name_handed_a_new_value_keeps_both_secret() -> None:
    redact.remember({"ROTATED_CREDS": "first-value-0001"})
    redact.remember({"ROTATED_CREDS": "second-value-0002"})
    shown = redact.current().text("first-value-0001 second-value-0002")
    assert "first-value" not in shown and "second-value" not in shown

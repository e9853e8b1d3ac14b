"""What the task graph keeps: typed models in its checkpoints, and no secret a tool read."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from helpers import FINISH, WRITE_DONE, TinyProject, commit_files, git

from graphs.task import build_task_graph
from harness.agents import Usage
from harness.config.spec import Spec
from harness.feedback import Feedback
from harness.gates.record import GateRecord
from harness.problems import Problem
from harness.store import open_store

SECRET = "s3cr3t-value-that-must-not-leak-0123456789"


def test_checkpoints_hold_the_typed_models_and_revive_only_those(
    tiny: TinyProject, caplog: pytest.LogCaptureFixture
) -> None:
    # Attempt 1 fails the gate (feedback, problems), attempt 2 passes: every typed key is set.
    tiny.add_spec("t", attempts=[[FINISH], [WRITE_DONE, FINISH]])
    assert tiny.run().exit_code == 0
    store = open_store(f"sqlite:///{tiny.runs / 'harness.db'}")
    try:
        thread = {"configurable": {"thread_id": "r1/t"}}
        with caplog.at_level(logging.WARNING):
            values = build_task_graph(store.checkpointer()).get_state(thread).values
        assert isinstance(values["spec"], Spec) and values["spec"].id == "t"
        assert values["gate_records"] and all(
            isinstance(r, GateRecord) for r in values["gate_records"]
        )
        assert isinstance(values["feedback"], Feedback)
        assert values["problems"] and all(isinstance(p, Problem) for p in values["problems"])
        assert isinstance(values["usage"], Usage)
        assert values["outcome"] == "verified" and values["attempt"] == 2
        assert not [r for r in caplog.records if "unregistered" in r.getMessage()]
        # The store's own serializer revives nothing by module path: without the graph's
        # allowlist the same checkpoint gives plain data, not harness's classes.
        bare = store.checkpointer().get_tuple(thread)
        assert bare is not None and not isinstance(bare.checkpoint["channel_values"]["spec"], Spec)
    finally:
        store.close()


def test_no_secret_a_tool_read_reaches_the_store_or_runs(
    tiny: TinyProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEMO_API_TOKEN", SECRET)
    commit_files(tiny.repo, {"config.txt": f"token = {SECRET}\n"})
    read = {"tool": "read_file", "args": {"path": "config.txt"}}
    tiny.add_spec("t", attempts=[[read, WRITE_DONE, FINISH]])
    assert tiny.run().exit_code == 0
    assert tiny.task("t")["outcome"] == "verified"
    # The agent did read it: the tool's result in its record is there, redacted.
    attempt = (tiny.runs / "r1" / "tasks" / "t" / "attempt-1.json").read_text(encoding="utf-8")
    assert "token = [REDACTED:DEMO_API_TOKEN]" in attempt
    # The search below finds the secret where it really is (the branch's tree)...
    assert SECRET in git(tiny.repo, "show", "harness/r1/t:config.txt")
    # ...and nowhere in what harness wrote: records, logs, the store and its checkpoints.
    leaks = [str(p) for p in _files(tiny.runs) if SECRET.encode() in p.read_bytes()]
    assert leaks == []


def _files(root: Path) -> list[Path]:
    found = [path for path in root.rglob("*") if path.is_file()]
    assert any(path.name == "harness.db" for path in found)  # the store is among them
    return found


def test_writers_of_one_record_at_once_never_fail_and_one_whole_text_wins(tmp_path: Path) -> None:
    """Two threads rewriting one record (two deliveries of one ticket writing its spec): each
    write is whole, none fails on the other's temporary file, and none is left behind."""
    from concurrent.futures import ThreadPoolExecutor

    from harness.run.ledger import write_atomic

    path = tmp_path / "record.md"
    texts = [f"writer {n}\n" * 2000 for n in range(2)]

    def write_many(text: str) -> None:
        for _ in range(300):
            write_atomic(path, text)

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(write_many, texts))  # re-raises a writer's exception
    assert path.read_text(encoding="utf-8") in texts
    assert [p.name for p in tmp_path.iterdir()] == ["record.md"]

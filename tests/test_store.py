"""The durable store, the same suite on SQLite and on a real PostgreSQL server (`store_url`)."""

from __future__ import annotations

import json
import operator
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph
from pg import free_port

from harness.errors import InputError
from harness.store import (
    EnvRecord,
    InvalidTransition,
    RunRecord,
    Store,
    open_store,
    owner_is_gone,
    worker_id,
)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = open_store(store_url)
    yield opened
    opened.close()


def make_run(store: Store, spec_ids: list[str], run_id: str = "r1") -> RunRecord:
    run = RunRecord(
        run_id=run_id,
        run_dir=f"runs/{run_id}",
        policy_path="policies/default.yaml",
        policy_text="gates: []\n",
        options={"agent": "replay", "concurrency": 2},
        specs=[{"id": spec_id} for spec_id in spec_ids],
        input_errors=["specs/bad.md: no id"],
    )
    store.create_run(run, spec_ids)
    return run


def make_env(env_id: str, spec_id: str = "a", run_id: str = "r1", **extra: Any) -> EnvRecord:
    fields: dict[str, Any] = {"kind": "worktree", "expires_at": time.time() + 3600, **extra}
    return EnvRecord(env_id=env_id, run_id=run_id, spec_id=spec_id, **fields)


def race(workers: int, work: Callable[[], Any]) -> list[Any]:
    """Run `work` in `workers` threads released together; their results."""
    barrier = threading.Barrier(workers)
    results: list[Any] = [None] * workers

    def one(index: int) -> None:
        barrier.wait()
        results[index] = work()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def dead_owner() -> str:
    """An owner string naming this host and the pid of a process that has finished."""
    child = subprocess.Popen(["true"])
    child.wait()
    return f"{socket.gethostname()}:{child.pid}:dead00"


# --- runs and tasks ---------------------------------------------------------------------------


def test_create_run_records_run_and_pending_tasks(store: Store) -> None:
    run = make_run(store, ["b", "a", "c"])
    assert store.get_run("r1") == run
    assert store.get_run("nope") is None
    tasks = store.tasks("r1")
    assert [t.spec_id for t in tasks] == ["b", "a", "c"]
    assert {(t.status, t.owner, t.claims) for t in tasks} == {("pending", None, 0)}


def test_duplicate_run_id_is_an_input_error(store: Store) -> None:
    make_run(store, ["a"])
    with pytest.raises(InputError, match="'r1' is already recorded") as caught:
        make_run(store, ["b"])
    assert "\n" not in str(caught.value)
    assert [t.spec_id for t in store.tasks("r1")] == ["a"]


def test_claims_follow_spec_order_until_none_left(store: Store) -> None:
    make_run(store, ["b", "a", "c"])
    make_run(store, ["z"], run_id="other")
    owner = worker_id()
    before = time.time()
    claimed = [store.claim_task("r1", owner, 60) for _ in range(3)]
    assert [t.spec_id for t in claimed if t] == ["b", "a", "c"]
    for task in claimed:
        assert task is not None
        assert (task.status, task.owner, task.claims) == ("claimed", owner, 1)
        assert task.lease_expires_at is not None and task.lease_expires_at >= before + 60
    assert store.claim_task("r1", worker_id(), 60) is None
    assert [t.status for t in store.tasks("other")] == ["pending"]


def test_racing_threads_never_get_the_same_task(store: Store) -> None:
    make_run(store, [f"s{i:02}" for i in range(30)])

    def drain() -> list[str]:
        owner, mine = worker_id(), []
        while (task := store.claim_task("r1", owner, 60)) is not None:
            mine.append(task.spec_id)
        return mine

    per_thread = race(6, drain)
    everything = [spec_id for mine in per_thread for spec_id in mine]
    assert sorted(everything) == [f"s{i:02}" for i in range(30)]
    assert {t.claims for t in store.tasks("r1")} == {1}


def test_one_task_raced_by_many_threads_goes_to_one(store: Store) -> None:
    make_run(store, ["only"])
    results = race(8, lambda: store.claim_task("r1", worker_id(), 60))
    winners = [task for task in results if task is not None]
    assert len(winners) == 1
    assert store.tasks("r1")[0].owner == winners[0].owner


def test_separate_processes_never_get_the_same_task(store_url: str, tmp_path: Path) -> None:
    opened = open_store(store_url)
    make_run(opened, [f"s{i:03}" for i in range(60)])
    opened.close()
    go = tmp_path / "go"
    snippet = textwrap.dedent(
        f"""
        import json, os, time
        from harness.store import open_store, worker_id
        store = open_store({store_url!r})
        owner, mine = worker_id(), []
        while not os.path.exists({str(go)!r}):
            time.sleep(0.005)
        while (task := store.claim_task("r1", owner, 60)) is not None:
            mine.append(task.spec_id)
            assert store.complete_task("r1", task.spec_id, owner, {{"by": owner}})
        store.close()
        print(json.dumps(mine))
        """
    )
    children = [
        subprocess.Popen([sys.executable, "-c", snippet], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    time.sleep(0.5)  # both past their imports and connected, waiting for the file
    go.touch()
    outputs = [child.communicate(timeout=120)[0] for child in children]
    assert [child.returncode for child in children] == [0, 0]
    claimed = [spec_id for out in outputs for spec_id in json.loads(out)]
    assert sorted(claimed) == [f"s{i:03}" for i in range(60)]
    reopened = open_store(store_url)
    assert {(t.status, t.claims) for t in reopened.tasks("r1")} == {("done", 1)}
    reopened.close()


def test_lapsed_lease_is_reclaimed_and_the_old_owner_loses_it(store: Store) -> None:
    make_run(store, ["a"])
    first, second = worker_id(), worker_id()
    assert store.claim_task("r1", first, 0.05) is not None
    assert store.claim_task("r1", second, 60) is None  # lease still running
    time.sleep(0.1)
    task = store.claim_task("r1", second, 60)
    assert task is not None and (task.owner, task.claims) == (second, 2)
    assert store.heartbeat("r1", "a", first, 60) is False
    assert store.complete_task("r1", "a", first, {"outcome": "verified"}) is False
    assert store.heartbeat("r1", "a", second, 60) is True
    assert store.complete_task("r1", "a", second, {"outcome": "escalated"}) is True
    assert store.tasks("r1")[0].result == {"outcome": "escalated"}


def test_task_of_a_gone_process_is_reclaimed_without_waiting(store: Store) -> None:
    make_run(store, ["a", "b", "c"])
    gone = dead_owner()
    assert owner_is_gone(gone)
    elsewhere = "another-host:1:abcdef"  # never judged here: its lease must lapse
    assert store.claim_task("r1", elsewhere, 3600) is not None
    assert store.claim_task("r1", worker_id(), 3600) is not None  # a live owner: this process
    assert store.claim_task("r1", gone, 3600) is not None
    me = worker_id()
    task = store.claim_task("r1", me, 60)
    assert task is not None and (task.spec_id, task.owner, task.claims) == ("c", me, 2)
    assert store.claim_task("r1", worker_id(), 60) is None


def test_heartbeat_extends_the_task_and_its_live_environments(store: Store) -> None:
    make_run(store, ["a", "b"])
    owner = worker_id()
    assert store.claim_task("r1", owner, 5) is not None
    store.allocate_env(make_env("a-tree"))
    store.allocate_env(make_env("a-services", kind="services"))
    store.allocate_env(make_env("a-old"))
    store.transition("a-old", "tearing_down")
    store.transition("a-old", "deleted")
    store.allocate_env(make_env("b-tree", spec_id="b", owner="someone", lease_expires_at=1.0))
    before = time.time()
    assert store.heartbeat("r1", "a", owner, 600) is True
    task = store.tasks("r1")[0]
    assert task.lease_expires_at is not None and task.lease_expires_at >= before + 600
    for env_id in ("a-tree", "a-services"):
        env = store.get_env(env_id)
        assert env is not None and env.owner == owner
        assert env.lease_expires_at is not None and env.lease_expires_at >= before + 600
    old = store.get_env("a-old")
    assert old is not None and (old.owner, old.lease_expires_at) == (None, None)
    other = store.get_env("b-tree")
    assert other is not None and (other.owner, other.lease_expires_at) == ("someone", 1.0)
    assert store.heartbeat("r1", "b", owner, 600) is False  # never claimed by us


def test_complete_task_only_by_its_owner_and_only_once(store: Store) -> None:
    make_run(store, ["a"])
    owner = worker_id()
    assert store.complete_task("r1", "a", owner, {}) is False  # pending: nobody holds it
    assert store.claim_task("r1", owner, 60) is not None
    assert store.complete_task("r1", "a", worker_id(), {"x": 1}) is False
    result = {"outcome": "verified", "attempts": 2, "gates": [{"name": "tests"}]}
    assert store.complete_task("r1", "a", owner, result) is True
    assert store.complete_task("r1", "a", owner, {"again": True}) is False
    task = store.tasks("r1")[0]
    assert (task.status, task.owner, task.result) == ("done", owner, result)
    assert store.claim_task("r1", worker_id(), 60) is None
    assert store.heartbeat("r1", "a", owner, 60) is False


# --- environments -----------------------------------------------------------------------------


def test_allocate_env_is_idempotent_until_deleted(store: Store) -> None:
    first = store.allocate_env(make_env("e1", config={"v": 1}, status="ready"))
    assert first.status == "allocating"  # whatever the caller passed
    again = store.allocate_env(make_env("e1", config={"v": 2}))
    assert again == first and store.get_env("e1") == first
    store.transition("e1", "tearing_down")
    store.transition("e1", "deleted")
    fresh = store.allocate_env(make_env("e1", config={"v": 3}))
    assert (fresh.status, fresh.config) == ("allocating", {"v": 3})
    assert store.get_env("e1") == fresh
    steps = [(e["from"], e["to"]) for e in store.env_events("e1")]
    assert steps == [
        (None, "allocating"),
        ("allocating", "tearing_down"),
        ("tearing_down", "deleted"),
        (None, "allocating"),
    ]
    assert store.get_env("nope") is None


def test_transitions_follow_the_lifecycle_and_are_recorded(store: Store) -> None:
    store.allocate_env(make_env("e1", artifacts={"worktree": "/w"}))
    store.transition("e1", "provisioning", artifacts={"branch": "harness/r1/a"})
    ready = store.transition("e1", "ready", artifacts={"worktree": "/w2"}, expires_at=123.5)
    assert ready.artifacts == {"worktree": "/w2", "branch": "harness/r1/a"}
    assert ready.expires_at == 123.5
    assert store.get_env("e1") == ready
    with pytest.raises(InvalidTransition, match="ready → allocating") as caught:
        store.transition("e1", "allocating")
    assert "\n" not in str(caught.value)
    assert store.get_env("e1") == ready  # unchanged
    store.transition("e1", "validating")
    store.transition("e1", "ready")
    store.transition("e1", "tearing_down")
    store.transition("e1", "deleted")
    with pytest.raises(InvalidTransition):
        store.transition("e1", "tearing_down")
    with pytest.raises(InvalidTransition, match="not in store"):
        store.transition("missing", "ready")
    events = store.env_events("e1")
    assert [e["to"] for e in events] == [
        "allocating", "provisioning", "ready", "validating", "ready", "tearing_down", "deleted",
    ]  # fmt: skip
    assert [e["from"] for e in events[1:]] == [e["to"] for e in events[:-1]]
    assert all(e["env_id"] == "e1" for e in events)
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)
    assert store.env_events("missing") == []


def test_envs_by_run_and_liveness(store: Store) -> None:
    store.allocate_env(make_env("x1"))
    store.allocate_env(make_env("x2", run_id="r2"))
    store.allocate_env(make_env("x3"))
    store.transition("x3", "failed")
    store.transition("x3", "tearing_down")
    store.transition("x3", "deleted")

    def ids(**filters: Any) -> list[str]:
        return sorted(env.env_id for env in store.envs(**filters))

    assert ids() == ["x1", "x2", "x3"]
    assert ids(run_id="r1") == ["x1", "x3"]
    assert ids(live=True) == ["x1", "x2"]
    assert ids(live=False) == ["x3"]
    assert ids(run_id="r1", live=True) == ["x1"]


def test_teardown_lock_is_held_by_one_owner_until_released_or_lapsed(store: Store) -> None:
    store.allocate_env(make_env("e1"))
    first, second = worker_id(), worker_id()
    assert store.lock_teardown("e1", first, 60) is True
    assert store.lock_teardown("e1", second, 60) is False
    assert store.lock_teardown("e1", first, 60) is True  # already ours
    store.unlock_teardown("e1", second)  # not the holder: no effect
    assert store.lock_teardown("e1", second, 60) is False
    store.unlock_teardown("e1", first)
    assert store.lock_teardown("e1", second, 0.05) is True
    time.sleep(0.1)
    assert store.lock_teardown("e1", first, 60) is True  # the lapsed lock is free
    env = store.get_env("e1")
    assert env is not None and env.lock_owner == first
    store.transition("e1", "tearing_down")
    store.transition("e1", "deleted")
    store.unlock_teardown("e1", first)
    assert store.lock_teardown("e1", first, 60) is False  # deleted
    assert store.lock_teardown("missing", first, 60) is False


def test_a_teardown_lock_whose_holder_died_is_taken_over_at_once(store: Store) -> None:
    # A worker killed in the middle of a teardown: its resumed task must finish it, not wait
    # the lock out (fault injection caught an environment left tearing_down).
    store.allocate_env(make_env("e1"))
    assert store.lock_teardown("e1", dead_owner(), 600) is True
    live = worker_id()
    assert store.lock_teardown("e1", live, 60) is True
    assert store.lock_teardown("e1", worker_id(), 60) is False  # a live holder is waited for


def test_concurrent_teardown_locks_exactly_one_wins(store: Store) -> None:
    store.allocate_env(make_env("e1"))
    results = race(8, lambda: store.lock_teardown("e1", worker_id(), 60))
    assert sorted(results) == [False] * 7 + [True]


# --- idempotency keys -------------------------------------------------------------------------


def test_effects_begin_once_and_finish_with_a_value(store: Store) -> None:
    assert store.get_effect("publish:r1:a") is None
    started = store.begin_effect("publish:r1:a", "publish")
    assert (started.key, started.kind, started.status, started.value) == (
        "publish:r1:a", "publish", "started", {},
    )  # fmt: skip
    assert store.begin_effect("publish:r1:a", "other-kind") == started
    store.finish_effect("publish:r1:a", {"branch": "harness/r1/a", "pr": "prs/a.md"})
    done = store.begin_effect("publish:r1:a", "publish")
    assert (done.status, done.value) == ("done", {"branch": "harness/r1/a", "pr": "prs/a.md"})
    assert store.get_effect("publish:r1:a") == done
    with pytest.raises(KeyError):
        store.finish_effect("never-begun", {})


def test_racing_begin_effect_creates_one_record(store: Store) -> None:
    results = race(6, lambda: store.begin_effect("commit:r1:a:1", "commit"))
    assert {(e.key, e.status) for e in results} == {("commit:r1:a:1", "started")}


# --- durability and checkpoints ---------------------------------------------------------------


def test_records_survive_reopening(store_url: str) -> None:
    first = open_store(store_url)
    make_run(first, ["a"])
    owner = worker_id()
    assert first.claim_task("r1", owner, 60) is not None
    first.allocate_env(make_env("e1"))
    first.begin_effect("k", "commit")
    first.close()
    second = open_store(store_url)
    assert second.get_run("r1") is not None
    assert second.tasks("r1")[0].owner == owner
    assert [e["to"] for e in second.env_events("e1")] == ["allocating"]
    effect = second.get_effect("k")
    assert effect is not None and effect.status == "started"
    second.close()


class Counter(TypedDict):
    visits: Annotated[list[str], operator.add]


def test_checkpointer_persists_graph_state_across_invocations(store_url: str) -> None:
    def build(store: Store) -> Any:
        graph = StateGraph(Counter)
        graph.add_node("visit", lambda state: {"visits": [f"v{len(state['visits'])}"]})
        graph.add_edge(START, "visit")
        graph.add_edge("visit", END)
        return graph.compile(checkpointer=store.checkpointer())

    config = {"configurable": {"thread_id": "r1/a"}}
    store = open_store(store_url)
    assert store.checkpointer() is store.checkpointer()
    app = build(store)
    assert app.invoke({"visits": []}, config) == {"visits": ["v0"]}
    assert app.invoke({"visits": []}, config) == {"visits": ["v0", "v1"]}
    assert app.invoke({"visits": []}, {"configurable": {"thread_id": "r1/b"}}) == {"visits": ["v0"]}
    store.close()
    reopened = open_store(store_url)
    state = build(reopened).get_state(config)
    assert state.values == {"visits": ["v0", "v1"]}
    reopened.close()


# --- unusable URLs ----------------------------------------------------------------------------


def assert_one_line_input_error(url: str, *needles: str) -> str:
    with pytest.raises(InputError) as caught:
        open_store(url)
    message = str(caught.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message
    return message


def test_unknown_scheme_is_an_input_error() -> None:
    assert_one_line_input_error("mysql://db/harness", "mysql://db/harness", "unknown scheme")


def test_sqlite_path_that_cannot_be_created_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    url = f"sqlite:///{tmp_path / 'a-file' / 'sub' / 'harness.db'}"
    assert_one_line_input_error(url, url, "cannot create directory")
    assert_one_line_input_error("sqlite:///:memory:", "sqlite:///:memory:")
    (tmp_path / "dir.db").mkdir()
    assert_one_line_input_error(f"sqlite:///{tmp_path / 'dir.db'}", "cannot open")


def test_postgres_on_a_closed_port_is_an_input_error_without_the_password() -> None:
    url = f"postgresql://harness:s3cret-pw@127.0.0.1:{free_port()}/harness"
    started = time.monotonic()
    message = assert_one_line_input_error(url, "cannot connect", "HARNESS_STORE_URL")
    assert "s3cret-pw" not in message
    assert "postgresql://harness:***@127.0.0.1:" in message
    assert time.monotonic() - started < 30  # fails fast, not after a long retry

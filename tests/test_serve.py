"""`harness serve` driven as GitHub drives it: GitHub's example payloads, signed over their exact
bytes, posted over HTTP to the real server (uvicorn, a subprocess) on 127.0.0.1; the store
and the status comments checked afterwards. Kill -9 after the ack (the task survives and runs
on restart) and before it (nothing stored; GitHub's manual redelivery, same id, works).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from webhooks import ServeProject, Server, comment, example, labeled, post, sign

from harness.store import Store, open_store


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> ServeProject:
    return ServeProject(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def server(project: ServeProject) -> Iterator[Server]:
    running = Server(project)
    yield running
    running.stop()


@pytest.fixture
def store(project: ServeProject) -> Iterator[Store]:
    opened = open_store(project.store_url())
    yield opened
    opened.close()


@contextlib.contextmanager
def _opened(project: ServeProject) -> Iterator[Store]:
    opened = open_store(project.store_url())
    try:
        yield opened
    finally:
        opened.close()


def runs_of(store: Store, number: int) -> list[str]:
    """The runs the ledger admitted for issue `number`."""
    ticket = f"github:Codertocat/Hello-World#{number}"
    return [
        row.run_id or ""
        for row in store.trigger_deliveries(1000)
        if row.ticket_key == ticket and row.verdict == "admitted"
    ]


def test_a_labelled_issue_becomes_a_verified_task_with_its_comment_states(
    project: ServeProject, server: Server, store: Store
) -> None:
    task = project.replay_for(1)
    reply = post(server.port, "issues", labeled(1))
    assert reply.status == 200, reply
    assert reply.body["verdict"] == "admitted" and reply.body["task"] == task
    project.wait_state(1, "verified")
    states = project.states(1)
    assert states[:2] == ["admitted", "queued"], states
    assert "running" in states and states[-1] == "verified", states
    assert any("attempt 1, gates" in body for body in project.comments(1))
    # The spec was made from the ticket and saved beside its replay file, with the source hash.
    spec = (project.specs / f"{task}.md").read_text(encoding="utf-8")
    assert "title: Spelling error in the README file" in spec
    assert "source sha256" in spec and "<ticket-text>" in spec
    [run_id] = runs_of(store, 1)
    [record] = store.tasks(run_id)
    assert record.status == "done" and record.result is not None
    assert record.result["outcome"] == "verified"
    pr_record = (project.runs / run_id / "prs" / f"{task}.md").read_text(encoding="utf-8")
    assert "- Closes Codertocat/Hello-World#1" in pr_record.splitlines()  # the PR names it
    assert project.comments(1)[-1].count("<!-- harness:status github:Codertocat/Hello-World#1 -->")


def test_a_redelivery_with_the_same_id_is_a_recorded_duplicate(
    project: ServeProject, server: Server, store: Store
) -> None:
    project.replay_for(2)
    body = json.dumps(labeled(2)).encode()
    first = post(server.port, "issues", body, delivery="d-2")
    again = post(server.port, "issues", body, delivery="d-2")
    assert first.body["verdict"] == "admitted"
    assert again.status == 200 and again.body["verdict"] == "duplicate", again
    assert "same delivery id" in again.body["message"]
    assert len(runs_of(store, 2)) == 1
    verdicts = [r.verdict for r in store.trigger_deliveries(1000) if r.delivery_id == "d-2"]
    assert sorted(verdicts) == ["admitted", "duplicate"]


def test_the_same_body_under_a_new_id_is_a_duplicate_too(
    project: ServeProject, server: Server, store: Store
) -> None:
    project.replay_for(3)
    body = json.dumps(labeled(3)).encode()
    assert post(server.port, "issues", body).body["verdict"] == "admitted"
    replayed = post(server.port, "issues", body)  # GitHub signs no timestamp: a replay
    assert replayed.status == 200 and replayed.body["verdict"] == "duplicate", replayed
    assert "same body" in replayed.body["message"]
    assert len(runs_of(store, 3)) == 1


def test_two_deliveries_for_one_ticket_1ms_apart_make_one_task(
    project: ServeProject, server: Server, store: Store
) -> None:
    """Two different deliveries (a label and a command, say) race: one task, the other a
    recorded no-op."""
    project.replay_for(4)
    bodies = []
    for n in range(2):
        payload = labeled(4)
        payload["issue"]["updated_at"] = f"2026-01-01T00:00:0{n}Z"  # distinct bodies
        bodies.append(json.dumps(payload).encode())
    replies: list[dict[str, object]] = []

    def send(body: bytes) -> None:
        replies.append(post(server.port, "issues", body).body)

    threads = [threading.Thread(target=send, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
        time.sleep(0.001)
    for thread in threads:
        thread.join()
    assert sorted(str(r["verdict"]) for r in replies) == ["admitted", "running"], replies
    assert len(runs_of(store, 4)) == 1
    project.wait_state(4, "verified")


def test_a_command_from_a_user_without_write_access_is_refused(
    project: ServeProject, server: Server, store: Store
) -> None:
    payload = comment(5, "/harness run", association="NONE")
    reply = post(server.port, "issue_comment", payload)
    assert reply.status == 200 and reply.body["verdict"] == "refused", reply
    assert "no write access" in reply.body["message"]
    assert runs_of(store, 5) == []
    project.wait_state(5, "refused")
    assert "no write access" in project.comments(5)[-1]


def test_a_retry_command_from_a_collaborator_runs_the_finished_ticket_again(
    project: ServeProject, server: Server, store: Store
) -> None:
    task = project.replay_for(6)
    assert post(server.port, "issues", labeled(6)).body["verdict"] == "admitted"
    project.wait_state(6, "verified")
    # Labelled again once done: a no-op that says how to run it again.
    again = post(server.port, "issue_comment", comment(6, "/harness run", "MEMBER"))
    assert again.body["verdict"] == "done", again
    retry = post(server.port, "issue_comment", comment(6, "/harness retry", "OWNER"))
    assert retry.body["verdict"] == "admitted" and retry.body["task"] == task, retry
    assert runs_of(store, 6) == [f"{task}.r2", task]  # newest first; the same task id


def test_a_bad_signature_is_401_and_nothing_is_stored(
    project: ServeProject, server: Server, store: Store
) -> None:
    before = len(store.trigger_deliveries(10_000))
    body = json.dumps(labeled(7)).encode()
    wrong = post(server.port, "issues", body, signature=sign(body, "not the secret"))
    tampered = post(server.port, "issues", body + b" ", signature=sign(body))
    assert (wrong.status, tampered.status) == (401, 401)
    assert len(store.trigger_deliveries(10_000)) == before
    assert "bad signature" in server.output()


def test_ping_unknown_events_and_malformed_bodies(project: ServeProject, server: Server) -> None:
    ping = post(server.port, "ping", example("ping"))
    assert ping.status == 202 and ping.body["message"].startswith("ignored: ping")
    other = post(server.port, "issues", example("issues", "opened"))
    assert other.status == 202 and "issues.opened" in other.body["message"]
    assert post(server.port, "issues", b"{not json").status == 400
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz") as health:
        assert health.status == 200


def test_kill_9_before_the_ack_then_after_it_then_sigterm_mid_task(tmp_path: Path) -> None:
    """Killed before the ack (at the failpoint before the ledger's transaction): nothing is
    stored, and GitHub's manual redelivery (the same delivery id) is admitted, not taken for
    a duplicate. Killed right after that ack: the task is in the store, unfinished, and the
    next serve takes it up. Stopped by SIGTERM while its gate runs: the task goes back to the
    store `interrupted` (the comment says so) and the serve after that finishes it, once."""
    project = ServeProject(tmp_path, gate="sleep 1 && test -f done.txt")
    project.replay_for(12)
    body = json.dumps(labeled(12)).encode()
    doomed = Server(project, env={"HARNESS_FAILPOINTS": "serve.before_commit"})
    with pytest.raises(OSError):  # the connection dies with the server: no ack
        post(doomed.port, "issues", body, delivery="d-12")
    doomed.process.wait(timeout=10)
    with _opened(project) as store:
        assert store.trigger_deliveries(100) == []
        assert store.unfinished_trigger_runs() == []

    second = Server(project)
    redelivered = post(second.port, "issues", body, delivery="d-12")  # the same id
    assert redelivered.body["verdict"] == "admitted", redelivered
    second.kill()  # kill -9 right after the ack
    with _opened(project) as store:
        [run_id] = runs_of(store, 12)
        [task] = store.tasks(run_id)
        assert task.status != "done"
        assert store.unfinished_trigger_runs() == [run_id]

    third = Server(project)
    deadline = time.monotonic() + 60
    while not any("attempt 1, gates" in c for c in project.comments(12)):
        assert time.monotonic() < deadline, project.states(12)
        time.sleep(0.05)
    third.stop()  # SIGTERM while the gate sleeps
    assert "Finished server process" in third.output()  # a graceful stop
    assert project.states(12)[-1] == "interrupted", project.states(12)
    with _opened(project) as store:
        [task] = store.tasks(run_id)
        assert task.status == "pending" and task.result and task.result["outcome"] == "interrupted"

    fourth = Server(project)
    try:
        project.wait_state(12, "verified")
    finally:
        fourth.stop()
    with _opened(project) as store:
        assert runs_of(store, 12) == [run_id]
        [task] = store.tasks(run_id)
        assert task.status == "done" and task.result and task.result["outcome"] == "verified"

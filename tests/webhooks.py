"""For the serve and triggers tests: GitHub's own example payloads, signing, a project that
`harness serve` can run tickets for, and `harness serve` as a real subprocess on uvicorn.

The payloads come from npm @octokit/webhooks-examples, installed into .cache/ by `make test`
(`make webhooks`); a test changes only the fields its case is about (issue number, comment
body, author association), never the payload's shape.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import REPO_ROOT, init_repo
from pg import free_port

EXAMPLES = (
    REPO_ROOT
    / ".cache/octokit-webhooks-examples/node_modules/@octokit/webhooks-examples/api.github.com"
    / "index.json"
)
SECRET = "it's a secret to everybody"
HARNESS = Path(sys.executable).with_name("harness")


def example(event: str, action: str | None = None, index: int = 0) -> dict[str, Any]:
    """GitHub's example payload for `event` (and `action`), a fresh copy."""
    if not EXAMPLES.exists():
        pytest.fail(f"{EXAMPLES} is missing: run `make webhooks` (make test does)")
    catalogue = json.loads(EXAMPLES.read_text(encoding="utf-8"))
    found = next(entry for entry in catalogue if entry["name"] == event)
    matching = [e for e in found["examples"] if action is None or e.get("action") == action]
    return copy.deepcopy(matching[index])


def labeled(number: int, label: str = "harness") -> dict[str, Any]:
    payload = example("issues", "labeled")
    payload["issue"]["number"] = number
    payload["issue"]["html_url"] = f"https://github.com/Codertocat/Hello-World/issues/{number}"
    payload["label"]["name"] = label
    return payload


def comment(number: int, body: str, association: str) -> dict[str, Any]:
    payload = example("issue_comment", "created")
    payload["issue"]["number"] = number
    payload["comment"]["body"] = body
    payload["comment"]["author_association"] = association
    return payload


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class Reply:
    status: int
    body: dict[str, Any]


def post(
    port: int,
    event: str,
    payload: dict[str, Any] | bytes,
    *,
    delivery: str | None = None,
    signature: str | None = None,
    path: str = "/webhooks/github",
) -> Reply:
    """POST as GitHub does: the event, the delivery's id, the signature over the exact bytes."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/test",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
            "X-Hub-Signature-256": signature or sign(body),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return Reply(response.status, json.loads(response.read() or b"{}"))
    except urllib.error.HTTPError as error:
        text = error.read()
        return Reply(error.code, json.loads(text) if text.startswith(b"{") else {"text": text})


REPLAY_DONE = {
    "attempts": [
        {
            "steps": [
                {"tool": "write_file", "args": {"path": "done.txt", "content": "done\n"}},
                {"tool": "finish", "args": {"summary": "done"}},
            ]
        }
    ]
}


@dataclass
class ServeProject:
    """tmp/repo (a git repo), tmp/policy.yaml (one gate: `test -f done.txt`),
    tmp/triggers.yaml mapping Codertocat/Hello-World (GitHub's example repository) to it,
    tmp/specs for tickets' specs and their replay files, tmp/runs."""

    root: Path
    gate: str = "test -f done.txt"
    extra: dict[str, Any] = field(default_factory=dict)
    publish: dict[str, Any] = field(default_factory=dict)
    """The policy's `publish:` (default: local records)."""
    repository: str = "Codertocat/Hello-World"
    """The repository mapped (GitHub's example payloads name Codertocat/Hello-World)."""

    def __post_init__(self) -> None:
        repo = self.root / "repo"
        repo.mkdir(parents=True)
        (repo / "README.md").write_text("# hello\n", encoding="utf-8")
        init_repo(repo)
        policy = {
            "agent": {"kind": "replay"},
            "gates": [{"name": "done", "kind": "test", "command": self.gate, "timeout_s": 60}],
            "budget": {"max_attempts": 1, "max_steps": 10, "wall_clock_s": 120},
            "concurrency": 1,
        } | ({"publish": self.publish} if self.publish else {})
        (self.root / "policy.yaml").write_text(yaml.safe_dump(policy), encoding="utf-8")
        mapping = {"path": "repo", "policy": "policy.yaml", "base": "main"}
        config = {
            "workers": 2,
            "github": {"repos": {self.repository: mapping}},
            **self.extra,
        }
        self.config.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.specs.mkdir()

    @property
    def config(self) -> Path:
        return self.root / "triggers.yaml"

    @property
    def specs(self) -> Path:
        return self.root / "specs"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def task(self, number: int) -> str:
        """Issue `number`'s task id (it derives from the ticket)."""
        return f"{self.repository.lower().replace('/', '-')}-{number}"

    def replay_for(self, number: int) -> str:
        """The replay file for issue `number`'s task."""
        task = self.task(number)
        (self.specs / f"{task}.replay.yaml").write_text(yaml.safe_dump(REPLAY_DONE), "utf-8")
        return task

    def comments(self, number: int) -> list[str]:
        """Every version of issue `number`'s status comment, oldest first."""
        path = self.runs / "triggers" / "comments" / f"{self.task(number)}.jsonl"
        if not path.exists():
            return []
        return [json.loads(line)["body"] for line in path.read_text("utf-8").splitlines()]

    def states(self, number: int) -> list[str]:
        """The state each version of the comment announced (`**harness**: <state> …`)."""
        return [_state(body) for body in self.comments(number)]

    def wait_state(self, number: int, state: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if state in self.states(number):
                return
            time.sleep(0.1)
        raise AssertionError(f"issue {number} never {state}: {self.states(number)}")

    def store_url(self) -> str:
        return f"sqlite:///{self.runs.resolve() / 'harness.db'}"


def _state(body: str) -> str:
    line = next(line for line in body.splitlines() if line.startswith("**harness**: "))
    return line.removeprefix("**harness**: ").split(" — ")[0]


class Server:
    """`harness serve` as a real subprocess (uvicorn), its own process group."""

    def __init__(self, project: ServeProject, env: dict[str, str] | None = None) -> None:
        self.project = project
        self.port = free_port()
        self.log = project.root / f"serve-{self.port}.log"
        environment = os.environ | {"GITHUB_WEBHOOK_SECRET": SECRET} | (env or {})
        environment.pop("HARNESS_STORE_URL", None)
        self.process = subprocess.Popen(
            [
                str(HARNESS),
                "serve",
                "--config",
                str(project.config),
                "--port",
                str(self.port),
                "--runs-dir",
                str(project.runs),
            ],
            cwd=project.root,
            env=environment,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.wait_ready()

    def wait_ready(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited {self.process.returncode}: {self.output()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"serve not ready in {timeout_s}s: {self.output()}")

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def kill(self) -> None:
        """kill -9, the whole group (uvicorn and any sandboxed process it started)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> int:
        """SIGTERM, as a service manager stops it; its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

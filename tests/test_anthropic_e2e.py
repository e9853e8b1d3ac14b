"""The demo batch with `--agent anthropic` against the fake Messages API: the Done-when test.

The fake plays each spec's replay trajectory through the wire format (ReplayScript), so the
anthropic backend must reach the same four outcomes as the replay demo, with real git, real
bubblewrap and the demo's real gates (ruff, mypy, pytest). The batch runs once per module
(~40-60 s); every test reads what it left.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fake_anthropic import FakeMessagesServer, ReplayScript, block_text
from helpers import CliResult, branch_exists, make_demo_repo, run_cli

# The SDK warns that the demo policy's model is nearing end-of-life; not this test's business.
pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

RUN_ID = "e2e-anthropic"
KEY = "test-key"
EXPECTED = {
    # spec id: (outcome, attempts, the reason starts with)
    "add-bulk-discount": ("verified", 1, None),
    "fix-pagination": ("verified", 2, None),
    "round-tax-per-line": ("escalated", 2, "budget exhausted"),
    "migrate-payment-provider": ("escalated", 0, "tier 3"),
    "price-bulk-orders": ("verified", 1, None),  # integration-gated (examples/mesh)
}
RAN = [spec_id for spec_id, (_, attempts, _) in EXPECTED.items() if attempts]


@dataclass
class AnthropicDemo:
    repo: Path
    result: CliResult
    server: FakeMessagesServer

    @property
    def run_dir(self) -> Path:
        return self.repo / "runs" / RUN_ID

    @property
    def summary(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.run_dir / "summary.json").read_text("utf-8"))
        return data

    def task(self, spec_id: str) -> dict[str, Any]:
        task: dict[str, Any] = {t["spec_id"]: t for t in self.summary["tasks"]}[spec_id]
        return task

    def replay_calls(self, spec_id: str, attempts: int) -> int:
        """Model calls the replay of `attempts` attempts takes: one per step, plus the closing
        end_turn reply for an attempt whose last step is not `finish`."""
        data = yaml.safe_load((self.repo / "specs" / f"{spec_id}.replay.yaml").read_text("utf-8"))
        calls = 0
        for attempt in data["attempts"][:attempts]:
            steps = attempt["steps"]
            calls += len(steps) + (0 if steps[-1]["tool"] == "finish" else 1)
        return calls


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnthropicDemo]:
    repo = make_demo_repo(tmp_path_factory.mktemp("anthropic-e2e") / "demo")
    with (
        FakeMessagesServer(ReplayScript(repo / "specs"), api_key=KEY) as server,
        pytest.MonkeyPatch.context() as env,
    ):
        for name in ("ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_CUSTOM_HEADERS"):
            env.delenv(name, raising=False)
        env.setenv("ANTHROPIC_API_KEY", KEY)
        env.setenv("ANTHROPIC_BASE_URL", server.base_url)
        argv = ["run", "specs", "--policy", "policies/demo.yaml", "--agent", "anthropic"]
        result = run_cli([*argv, "--runs-dir", "runs", "--run-id", RUN_ID], cwd=repo)
        yield AnthropicDemo(repo, result, server)


def test_exit_code_and_the_five_outcomes(demo: AnthropicDemo) -> None:
    assert demo.result.exit_code == 0, demo.result.stdout + demo.result.stderr
    outcomes = {t["spec_id"]: (t["outcome"], t["attempts"]) for t in demo.summary["tasks"]}
    assert outcomes == {spec_id: (o, a) for spec_id, (o, a, _) in EXPECTED.items()}
    for spec_id, (_, _, reason) in EXPECTED.items():
        task = demo.task(spec_id)
        if reason is None:
            assert task["reason"] is None and task["pr"], task
            assert branch_exists(demo.repo, task["branch"])
        else:
            assert task["reason"].startswith(reason), task["reason"]
            assert task["escalation"] and (demo.repo / task["escalation"]).is_file()


def test_every_task_is_labelled_with_the_anthropic_agent(demo: AnthropicDemo) -> None:
    assert {t["agent"] for t in demo.summary["tasks"]} == {"anthropic"}
    for spec_id in ("add-bulk-discount", "fix-pagination"):
        pr = (demo.repo / demo.task(spec_id)["pr"]).read_text("utf-8")
        assert "agent: `anthropic`" in pr


def test_the_fake_answered_every_request_from_the_replay(demo: AnthropicDemo) -> None:
    requests = demo.server.requests
    assert requests and {r.status for r in requests} == {200}
    assert demo.server.script_errors == []
    specs_asked = {
        line.split(":", 1)[1].strip()
        for r in requests
        for line in block_text(r.body["messages"][0]["content"]).splitlines()
        if line.startswith("spec:")
    }
    assert specs_asked == set(RAN)  # the tier-3 task never reached the model


def test_usage_per_task_matches_the_replayed_calls(demo: AnthropicDemo) -> None:
    total_calls = 0
    for spec_id, (_, attempts, _) in EXPECTED.items():
        usage = demo.task(spec_id)["usage"]
        if not attempts:
            assert usage["calls"] == 0 and usage["cost_usd"] == 0
            continue
        assert usage["calls"] == demo.replay_calls(spec_id, attempts), spec_id
        assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
        assert usage["cache_write_tokens"] > 0 and usage["cache_read_tokens"] > 0
        assert usage["cost_usd"] > 0
        total_calls += usage["calls"]
    assert demo.server.call_count == total_calls
    assert demo.summary["usage"]["calls"] == total_calls
    run_cost = sum(t["usage"]["cost_usd"] for t in demo.summary["tasks"])
    assert demo.summary["usage"]["cost_usd"] == pytest.approx(run_cost)


def test_trajectories_record_every_call(demo: AnthropicDemo) -> None:
    for spec_id in RAN:
        task_dir = demo.run_dir / "tasks" / spec_id
        paths = sorted(task_dir.rglob("trajectory.jsonl"))
        assert paths, f"no trajectory.jsonl under {task_dir}"
        lines = [json.loads(line) for p in paths for line in p.read_text("utf-8").splitlines()]
        assert len(lines) == demo.task(spec_id)["usage"]["calls"]
        assert {line["attempt"] for line in lines} == set(range(1, EXPECTED[spec_id][1] + 1))
        assert all(line["response"]["type"] == "message" for line in lines)
        assert KEY not in "".join(p.read_text("utf-8") for p in paths)
    assert not list((demo.run_dir / "tasks").glob("migrate-payment-provider/**/trajectory.jsonl"))


def test_fix_pagination_attempt_two_was_told_why_attempt_one_failed(demo: AnthropicDemo) -> None:
    openers = [
        block_text(r.body["messages"][0]["content"])
        for r in demo.server.requests
        if len(r.body["messages"]) == 1
        and "spec: fix-pagination" in block_text(r.body["messages"][0]["content"])
    ]
    assert len(openers) == 2
    first, second = openers
    assert first.splitlines()[1] == "attempt: 1" and "previous attempt" not in first
    assert second.splitlines()[1] == "attempt: 2"
    assert "Your previous attempt did not pass the gates" in second
    # The feedback names the failing gate, each failing test by id at its file:line, and
    # pytest's own message; and it is exactly what the run recorded as feedback-1.md.
    failed = [g for g in demo.task("fix-pagination")["gates"] if not g["passed"]]
    assert failed and f"### {failed[0]['name']}: Test failed" in second
    assert "tests/test_pagination.py::test_empty_listing_has_one_page" in second
    assert "`tests/test_pagination.py:14`" in second and "assert 0 == 1" in second
    told = (demo.run_dir / "tasks" / "fix-pagination" / "feedback-1.md").read_text("utf-8")
    assert told.strip() in second

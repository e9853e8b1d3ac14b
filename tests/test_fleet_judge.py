"""The fleet's optional tie-break judge (`fleet: {judge: {model: …}}`), driven by the real
anthropic SDK against the fake Messages API (tests/fake_anthropic.py): it is asked only about
verified variants that tie on every deterministic criterion, sees their compressed evidence,
goes through the run's limiter and spend, and its vote is advisory, in rank_reason and in
summary.json; a judge model that a variant uses is refused before the run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import anthropic
import pytest
from fake_anthropic import FakeMessagesServer, Usage, message, sequence
from helpers import TinyProject, commit_files, git, run_cli

from harness.agents.fleet import Fleet
from harness.config.policy import Price, parse_policy
from harness.config.spec import Spec, load_spec
from harness.fleet.judge import AnthropicJudge
from harness.fleet.ranking import TieBreaker
from harness.fleet.scoreboard import rank_run
from harness.fleet.variants import fleet_variants, variant_specs
from harness.run.ledger import RunSummary, TaskResult
from harness.sandbox.limits import Confinement

JUDGE_MODEL = "judge-model"
PRICE = Price(input=3, output=15, cache_write=0, cache_read=0)
VOTE_FOR_B = '{"prefer": "B", "why": "B also handles an empty page"}'


def fleet_of_two(tiny: TinyProject, *, attempts: tuple[int, int]) -> tuple[Path, list[Spec]]:
    """Two variants with branches of the same size, finished with `attempts`, as the run left
    them (summary.json), ready to be ranked."""
    spec = load_spec(tiny.add_spec("task", fleet={"variants": [{}], "judge": {"model": "j"}}))
    tasks = variant_specs(spec, fleet_variants(spec, 2, {}), tiny.specs)
    results = []
    for task, tries in zip(tasks, attempts, strict=True):
        branch = f"harness/f1/{task.id}"
        git(tiny.repo, "switch", "-q", "-c", branch, spec.base_commit)
        commit_files(tiny.repo, {"done.txt": f"{task.id}\n"})
        results.append(
            TaskResult(
                spec_id=task.id,
                title=task.title,
                tier=1,
                outcome="verified",
                reason=None,
                attempts=tries,
                agent="replay",
                branch=branch,
                pr=None,
                escalation=None,
                gates=[],
                duration_s=1.0,
                variant={"k": task.variant.k if task.variant else 0},
            )
        )
    git(tiny.repo, "switch", "-q", "main")
    run_dir = tiny.runs / "f1"
    run_dir.mkdir(parents=True)
    summary = RunSummary(
        run_id="f1",
        started_at="now",
        finished_at="now",
        policy="policy.yaml",
        isolation="bubblewrap",
        tasks=results,
    )
    (run_dir / "summary.json").write_text(summary.model_dump_json(), "utf-8")
    return run_dir, tasks


def judged_by(fake: FakeMessagesServer, fleet: Fleet) -> Callable[[str], TieBreaker | None]:
    client = anthropic.Anthropic(api_key="test-key", base_url=fake.base_url, max_retries=0)
    judge = AnthropicJudge(JUDGE_MODEL, PRICE, fleet, client)
    return lambda spec_id: judge


def a_fleet(tiny: TinyProject) -> Fleet:
    return Fleet.for_policy(parse_policy((tiny.root / "policy.yaml").read_text(), "policy.yaml"))


def test_a_full_tie_is_ordered_by_the_judges_advisory_vote(tiny: TinyProject) -> None:
    run_dir, specs = fleet_of_two(tiny, attempts=(1, 1))
    fleet = a_fleet(tiny)
    with FakeMessagesServer(sequence(message(VOTE_FOR_B, usage=Usage(1000, 20)))) as fake:
        summary = rank_run(run_dir, specs, Confinement(), judged_by(fake, fleet))
        [request] = fake.requests
    ranked = [(t.spec_id, t.rank) for t in summary.tasks]
    assert ranked == [("task/v2", 1), ("task/v1", 2)]  # without the vote: v1 first
    reason = summary.tasks[0].rank_reason or ""
    assert reason.startswith(
        "ahead of task/v1 on the judge's advisory vote (judge-model: B also handles an empty page)"
    )
    written = json.loads((run_dir / "summary.json").read_text("utf-8"))["tasks"]
    vote = {"model": JUDGE_MODEL, "vote": "task/v2", "why": "B also handles an empty page"}
    assert [t["judge"] for t in written] == [vote, vote]
    # It saw the compressed evidence (the diffstat), not the diff, on its own model…
    asked = request.body["messages"][0]["content"]
    assert request.body["model"] == JUDGE_MODEL
    assert "+1 -0 done.txt" in asked and "task/v1\n" not in asked
    # …and its call counted in the run's spend.
    assert fleet.spend.total.calls == 1
    assert fleet.spend.total.cost_usd == pytest.approx((1000 * 3 + 20 * 15) / 1e6)


def test_without_a_tie_the_judge_is_never_called(tiny: TinyProject) -> None:
    run_dir, specs = fleet_of_two(tiny, attempts=(2, 1))
    fleet = a_fleet(tiny)
    with FakeMessagesServer(sequence(message(VOTE_FOR_B))) as fake:
        summary = rank_run(run_dir, specs, Confinement(), judged_by(fake, fleet))
        assert fake.call_count == 0
    assert [t.spec_id for t in summary.tasks] == ["task/v2", "task/v1"]
    assert (summary.tasks[0].rank_reason or "").startswith("ahead of task/v1 on attempts")
    assert all(t.judge is None for t in summary.tasks)


def test_a_judge_model_a_variant_uses_is_refused(
    tiny: TinyProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    price = PRICE.model_dump()
    policy = tiny.write_policy(
        agent={"kind": "anthropic", "model": "m1"}, prices={"m1": price, "m2": price}
    )
    block = {"variants": [{"model": "m1"}, {"model": "m2"}], "judge": {"model": "m2"}}
    spec = tiny.add_spec("task", fleet=block)
    argv = ["fleet", str(spec), "-n", "2", "--policy", str(policy), "--runs-dir", str(tiny.runs)]
    result = run_cli(argv, tiny.root)
    assert result.exit_code == 2, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "fleet.judge.model 'm2': variant task/v2 uses it" in result.stderr

"""How a fleet's variants are made: --vary's product cycled to N, a spec's fleet: block, a
prompt file added to the body, and the spec keys' bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import TinyProject, run_cli

from harness.agents.fleet import Fleet
from harness.agents.prompt import task_message
from harness.agents.replay import ReplayAgent
from harness.agents.select import policy_for, select_agent
from harness.config.policy import load_policy
from harness.config.spec import load_spec
from harness.errors import InputError
from harness.fleet.variants import fleet_variants, parse_vary, variant_specs

PRICE = {"input": 3.0, "output": 15.0, "cache_write": 3.75, "cache_read": 0.30}


def test_vary_is_a_product_cycled_up_to_n(tiny: TinyProject) -> None:
    spec = load_spec(tiny.add_spec("task"))
    (tiny.root / "hints.md").write_text("Prefer a one-line fix.\n", "utf-8")
    vary = parse_vary(["model=m1,m2", "prompt=hints.md", "agent=replay"])
    tasks = variant_specs(spec, fleet_variants(spec, 3, vary), tiny.root)
    assert [(t.id, t.variant and t.variant.model) for t in tasks] == [
        ("task/v1", "m1"),
        ("task/v2", "m2"),
        ("task/v3", "m1"),
    ]
    assert all(t.variant and t.variant.agent == "replay" for t in tasks)
    assert "Prefer a one-line fix." in task_message(tasks[1], 1, None)
    assert "Prefer a one-line fix." not in task_message(spec, 1, None)


def test_a_specs_fleet_block_is_used_without_vary(tiny: TinyProject) -> None:
    block = {"variants": [{"model": "a"}, {"prompt": "hints.md"}]}
    spec = load_spec(tiny.add_spec("task", fleet=block))
    (tiny.specs / "hints.md").write_text("Hint.\n", "utf-8")  # relative to the spec
    tasks = variant_specs(spec, fleet_variants(spec, 3, {}), Path(spec.source).parent)
    assert [t.variant.model if t.variant else None for t in tasks] == ["a", None, "a"]
    assert tasks[1].body.endswith("Hint.\n") and not tasks[0].body.endswith("Hint.\n")


@pytest.mark.parametrize(
    ("front", "message"),
    [
        ({"fleet": {"variants": [{}], "judge": True}}, "fleet.judge: Input should be a valid dict"),
        ({"fleet": {"variants": [{"colour": "red"}]}}, "colour"),
        ({"id": "task/v1"}, "id: 'task/v1' may not contain '/'"),
    ],
)
def test_bad_fleet_keys_are_refused(
    tiny: TinyProject, front: dict[str, object], message: str
) -> None:
    path = tiny.add_spec("task", **front)
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        load_spec(path)


def test_a_variants_agent_and_model_replace_the_policys(tiny: TinyProject) -> None:
    policy = load_policy(tiny.write_policy(agent={"kind": "anthropic", "model": "m0"}))
    spec = load_spec(tiny.add_spec("task"))
    vary = parse_vary(["agent=replay,anthropic", "model=m1"])
    tasks = variant_specs(spec, fleet_variants(spec, 2, vary), tiny.root)
    chosen = [policy_for(task, policy).agent for task in tasks]
    assert [(a.kind, a.model) for a in chosen] == [("replay", "m1"), ("anthropic", "m1")]
    assert policy_for(spec, policy).agent.model == "m0"
    fleet = Fleet.for_policy(policy)
    assert isinstance(select_agent(tasks[0], policy, fleet), ReplayAgent)


def test_an_unpriced_variant_model_is_refused_before_the_run(tiny: TinyProject) -> None:
    tiny.write_policy(agent={"kind": "anthropic", "model": "m0"}, prices={"m0": PRICE})
    spec = tiny.add_spec("task")
    argv = ["fleet", str(spec), "-n", "2", "--vary", "model=m0,m9"]
    result = run_cli([*argv, "--policy", str(tiny.root / "policy.yaml")], tiny.root)
    assert result.exit_code == 2
    assert "task/v2" in result.stderr and "no price for model 'm9'" in result.stderr
    assert not tiny.runs.exists()

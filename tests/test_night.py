"""`harness night`: the window's end (a running task wrapped up, its work kept; queued ones
skipped), the budget reserved at admission (with the fake Messages API at known costs), the
queue's order and `after:`, the bad input refused before anything runs, and schedules (one
fire once across two workers, missed fires recorded), on both store backends where the store
is what is tested.

The tiny project's gates are shell commands, so each night takes a few seconds."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from fake_anthropic import FakeMessagesServer, MessageReply, ReplayScript, Reply, Usage
from helpers import FINISH, WRITE_DONE, TinyProject, git, run_cli

from harness.night.order import night_order
from harness.night.schedule import NightConfig, Schedule, fire_due
from harness.store import open_store

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")


def night(tiny: TinyProject, *args: str, run_id: str = "n1", policy: Path | None = None) -> Any:
    argv = ["night", str(tiny.specs), "--policy", str(policy or tiny.root / "policy.yaml")]
    return run_cli([*argv, "--runs-dir", str(tiny.runs), "--run-id", run_id, *args], tiny.root)


def iso_in(seconds: float) -> str:
    return (datetime.now().astimezone() + timedelta(seconds=seconds)).isoformat()


# --- the window ---------------------------------------------------------------------------------


def test_a_task_running_at_the_windows_end_is_escalated_with_its_work_kept(
    tiny: TinyProject,
) -> None:
    tiny.write_policy(concurrency=1)
    wip = {"tool": "write_file", "args": {"path": "wip.txt", "content": "half done\n"}}
    slow = {"tool": "run", "args": {"command": "sleep 60", "timeout_s": 120}}
    tiny.add_spec("slow", attempts=[[wip, slow, WRITE_DONE, FINISH]], priority=1)
    tiny.add_spec("queued")  # behind slow (lower priority), one lane: never starts
    result = night(tiny, "--until", iso_in(4))
    assert result.exit_code == 0, result.stdout + result.stderr
    slow_task, queued = tiny.task("slow", "n1"), tiny.task("queued", "n1")
    assert slow_task["outcome"] == "escalated"
    assert slow_task["reason"].startswith("window ended")
    assert git(tiny.repo, "show", "harness/n1/slow:wip.txt").strip() == "half done"
    assert queued["outcome"] == "skipped"
    assert queued["reason"].startswith("window: the night ended")
    night_block = tiny.summary("n1")["night"]
    assert night_block["until"] and night_block["reserved_usd"] == 0


def test_an_until_already_past_runs_nothing_and_skips_every_spec(tiny: TinyProject) -> None:
    tiny.write_policy()
    tiny.add_spec("one")
    tiny.add_spec("two")
    result = night(tiny, "--until", "2001-01-01T06:00:00+00:00")
    assert result.exit_code == 0, result.stdout + result.stderr
    tasks = tiny.summary("n1")["tasks"]
    assert {t["outcome"] for t in tasks} == {"skipped"}
    assert all("night ended" in t["reason"] and t["attempts"] == 0 for t in tasks)
    assert not (tiny.runs / "n1" / "worktrees").exists()
    assert "report.html" in result.stdout


def test_until_and_window_take_local_times_across_midnight() -> None:
    from harness.night.window import parse_until, parse_window

    evening = datetime(2026, 12, 3, 23, 0).astimezone()
    assert parse_until("06:00", evening) == datetime(2026, 12, 4, 6, 0).astimezone()
    assert parse_until("23:30", evening) == datetime(2026, 12, 3, 23, 30).astimezone()
    inside = parse_window("22:00-06:00", evening)
    assert (inside.start, inside.end) == (evening, datetime(2026, 12, 4, 6, 0).astimezone())
    noon = datetime(2026, 12, 3, 12, 0).astimezone()
    later = parse_window("22:00-06:00", noon)  # not open yet: it starts at 22:00
    assert later.start == datetime(2026, 12, 3, 22, 0).astimezone()
    assert later.end == datetime(2026, 12, 4, 6, 0).astimezone()
    assert parse_until("2026-12-04T06:00:00+00:00", noon).utcoffset() is not None


# --- the queue ----------------------------------------------------------------------------------


def test_the_queue_runs_priority_then_tier_then_file_order_and_after_waits_for_verified(
    tiny: TinyProject,
) -> None:
    tiny.write_policy(concurrency=1)
    failing = [[{"tool": "write_file", "args": {"path": "x.txt", "content": "x"}}, FINISH]]
    tiny.add_spec("a-low")
    tiny.add_spec("b-tier2", tier=2)
    tiny.add_spec("c-urgent", priority=5)
    tiny.add_spec("d-fails", attempts=failing, budget={"max_attempts": 1})
    tiny.add_spec("e-after-fails", after=["d-fails"], priority=9)
    tiny.add_spec("f-after-low", after=["a-low"], priority=9)
    result = night(tiny, "--until", iso_in(600))
    assert result.exit_code == 0, result.stdout + result.stderr
    started = [
        json.loads(line)["spec_id"]
        for line in (tiny.runs / "n1" / "events.jsonl").read_text().splitlines()
        if json.loads(line)["node"] == "triage" and json.loads(line)["event"] == "enter"
    ]
    # e and f rank first (priority 9) but wait for their after: specs, which come first.
    assert started == ["c-urgent", "a-low", "f-after-low", "d-fails", "b-tier2"]
    assert tiny.task("f-after-low", "n1")["outcome"] == "verified"
    skipped = tiny.task("e-after-fails", "n1")
    assert skipped["outcome"] == "skipped"
    assert skipped["reason"] == "after: d-fails ended escalated, not verified"


def test_after_naming_an_unknown_spec_or_a_cycle_is_refused_before_anything_runs(
    tiny: TinyProject,
) -> None:
    tiny.write_policy()
    tiny.add_spec("one", after=["nobody"])
    result = night(tiny, "--until", iso_in(600))
    assert result.exit_code == 2
    assert "after: nobody is not a spec of this batch" in result.stderr
    tiny.add_spec("one", after=["two"])
    tiny.add_spec("two", after=["one"])
    result = night(tiny, "--until", iso_in(600), run_id="n2")
    assert result.exit_code == 2
    assert "cycle" in result.stderr
    assert not (tiny.runs / "n1").exists() and not (tiny.runs / "n2").exists()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--until", "25:00"], "--until: '25:00' is not a time"),
        (["--window", "22:00"], "--window: '22:00' is not a window"),
        (["--until", "06:00", "--budget-usd", "-1"], "--budget-usd: -1 is negative"),
    ],
)
def test_a_bad_window_or_budget_is_one_line_naming_the_option(
    tiny: TinyProject, args: list[str], named: str
) -> None:
    tiny.write_policy()
    tiny.add_spec("one")
    result = night(tiny, *args)
    assert result.exit_code == 2
    assert named in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_the_order_puts_what_a_spec_waits_for_first_whatever_its_rank() -> None:
    from harness.config.spec import Spec

    def spec(spec_id: str, **front: Any) -> Spec:
        values = {"id": spec_id, "title": spec_id, "tier": 1, "repo": ".", "body": "x"}
        paths = {"source": "/s.md", "repo_dir": "/r", "git_toplevel": "/r", "base_commit": "0"}
        return Spec.model_validate({**values, **paths, **front})

    queue = night_order([spec("x", after=["z"], priority=3), spec("y", priority=2), spec("z")])
    assert [s.id for s in queue] == ["y", "z", "x"]


# --- the budget, with the fake Messages API at known costs -----------------------------------

CALL_USD = 0.2
"""1000 input and 1000 output tokens at $100 per million each."""


def fixed_cost(script: ReplayScript) -> Any:
    def play(body: dict[str, Any], index: int) -> Reply:
        reply = script(body, index)
        if isinstance(reply, MessageReply):
            return replace(reply, usage=Usage(1000, 1000))
        return reply

    return play


def test_the_budget_is_never_crossed_and_a_task_that_does_not_fit_is_skipped(
    tiny: TinyProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    prices = {"claude-sonnet-4-5": {"input": 100.0, "output": 100.0, "cache_write": 100.0,
                                    "cache_read": 100.0}}  # fmt: skip
    tiny.write_policy(
        agent={"kind": "anthropic", "model": "claude-sonnet-4-5"},
        prices=prices,
        concurrency=1,
        budget={"max_attempts": 1, "max_steps": 20, "wall_clock_s": 120, "max_cost_usd": 0.5},
    )
    # Each task: write done.txt, finish: two calls, $0.40. A greedy one keeps writing.
    greedy = [{"tool": "write_file", "args": {"path": f"f{i}.txt", "content": "x"}}
              for i in range(8)]  # fmt: skip
    tiny.add_spec("first", priority=3)
    tiny.add_spec("greedy", attempts=[[*greedy, WRITE_DONE, FINISH]], priority=2)
    tiny.add_spec("second", priority=1)
    tiny.add_spec("third")
    with FakeMessagesServer(fixed_cost(ReplayScript(tiny.specs)), api_key="k") as server:
        for name in ("ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_CUSTOM_HEADERS"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        result = night(tiny, "--until", iso_in(600), "--budget-usd", "1.3")
    assert result.exit_code == 0, result.stdout + result.stderr
    summary = tiny.summary("n1")
    spent = sum(t["usage"]["cost_usd"] for t in summary["tasks"])
    assert summary["night"]["budget_usd"] == 1.3
    assert summary["night"]["spent_usd"] == pytest.approx(spent)
    assert spent <= 1.3
    outcomes = {t["spec_id"]: (t["outcome"], t["usage"]["cost_usd"]) for t in summary["tasks"]}
    # first: no history, reserves the policy's $0.50, costs $0.40.
    assert outcomes["first"] == ("verified", pytest.approx(2 * CALL_USD))
    # greedy: reserves the p90 of history ($0.40), its cap; stopped after the call that
    # reached it, escalated, its work committed.
    assert outcomes["greedy"][0] == "escalated"
    assert outcomes["greedy"][1] == pytest.approx(2 * CALL_USD)
    assert "cost" in tiny.task("greedy", "n1")["reason"]
    # second fits in what is left ($1.17 - 0.80 = 0.37 < p90 0.40): skipped, with why.
    second = tiny.task("second", "n1")
    assert second["outcome"] == "skipped"
    assert second["reason"].startswith("budget: its estimate $0.40 (p90 of 2 earlier tasks)")
    assert tiny.task("third", "n1")["outcome"] == "skipped"


def test_the_replay_agent_reserves_nothing(tiny: TinyProject) -> None:
    tiny.write_policy(budget={"max_attempts": 1, "max_steps": 20, "max_cost_usd": 5.0})
    tiny.add_spec("one")
    result = night(tiny, "--until", iso_in(600), "--budget-usd", "0")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert tiny.task("one", "n1")["outcome"] == "verified"
    assert tiny.summary("n1")["night"] == {
        "until": tiny.summary("n1")["night"]["until"],
        "budget_usd": 0.0,
        "spent_usd": 0.0,
        "reserved_usd": 0.0,
    }


# --- schedules ------------------------------------------------------------------------------


def nightly(**overrides: Any) -> NightConfig:
    schedule = {"name": "nightly", "cron": "0 22 * * *", "specs": ["specs"], "until": "06:00"}
    return NightConfig.model_validate({"schedules": [schedule | overrides]})


def test_a_fire_runs_once_with_two_workers(store_url: str) -> None:
    config = nightly()
    now = datetime(2026, 12, 3, 22, 0, 30).astimezone()
    runs: list[str] = []
    barrier = threading.Barrier(2)
    fires: dict[str, list[Any]] = {}

    def run(schedule: Schedule, fire_at: datetime, run_id: str) -> None:
        runs.append(run_id)
        time.sleep(0.3)  # the other worker looks while this one runs

    def worker(name: str) -> None:
        store = open_store(store_url)  # each worker its own connection
        try:
            barrier.wait()
            fires[name] = fire_due(config, store, name, run, now)
        finally:
            store.close()

    threads = [threading.Thread(target=worker, args=(name,)) for name in ("w1", "w2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert runs == ["nightly-20261203-2200"]
    # The other worker found the fire taken: at its claim (the lease), or already recorded.
    statuses = sorted(fire.status for found in fires.values() for fire in found)
    assert statuses in (["ran"], ["ran", "taken"])
    store, other = open_store(store_url), open_store(store_url)
    try:  # the lease itself: one claim of a fire wins, from any connection
        at = int(now.timestamp())
        assert [
            store.claim_fire("other", at, "w1", "r"),
            other.claim_fire("other", at, "w2", "r"),
        ] == [True, False]
    finally:
        other.close()
    try:
        [record] = store.fires("nightly")
        assert (record.status, record.run_id) == ("done", "nightly-20261203-2200")
        # Seen again later the same night: already fired, nothing runs.
        assert fire_due(config, store, "w3", run, now + timedelta(minutes=5)) == []
    finally:
        store.close()
    assert len(runs) == 1


def test_fires_missed_while_nothing_ran_are_recorded_missed(store_url: str) -> None:
    config = nightly()
    ran: list[str] = []
    store = open_store(store_url)
    try:
        first = datetime(2026, 12, 1, 22, 0, 5).astimezone()
        fire_due(config, store, "w", lambda s, at, run_id: ran.append(run_id), first)
        # Nothing runs on the 2nd; on the 4th at 23:00 the 3rd and the 4th's own fire
        # are past: the 2nd and 3rd are missed, and the 4th runs (within catch_up_s).
        later = datetime(2026, 12, 4, 22, 30).astimezone()
        found = fire_due(config, store, "w", lambda s, at, run_id: ran.append(run_id), later)
        assert [(f.status, f.fire_at.day) for f in found] == [
            ("missed", 2), ("missed", 3), ("ran", 4)
        ]  # fmt: skip
        # A fire found past its catch-up time is missed, not run.
        late = datetime(2026, 12, 5, 23, 30).astimezone()
        found = fire_due(config, store, "w", lambda s, at, run_id: ran.append(run_id), late)
        assert [(f.status, f.fire_at.day) for f in found] == [("missed", 5)]
        assert ran == ["nightly-20261201-2200", "nightly-20261204-2200"]
        assert [r.status for r in store.fires("nightly")] == [
            "done", "missed", "missed", "done", "missed"
        ]  # fmt: skip
    finally:
        store.close()


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"cron": "61 * * * *"}, "schedules.0.cron"),
        ({"budget_usd": -1}, "schedules.0.budget_usd"),
        ({"until": None, "window": "22:00"}, "'22:00' is not a window"),
    ],
)
def test_a_bad_schedule_is_one_line_naming_the_field(
    tmp_path: Path, override: dict[str, Any], named: str
) -> None:
    schedule = {"name": "nightly", "cron": "0 22 * * *", "specs": ["specs"], "until": "06:00"}
    path = tmp_path / "night.yaml"
    path.write_text(yaml.safe_dump({"schedules": [schedule | override]}), "utf-8")
    result = run_cli(["night", "--config", str(path), "--runs-dir", str(tmp_path)], tmp_path)
    assert result.exit_code == 2
    assert named in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_harness_night_config_fires_the_schedules_of_a_serve_config(tiny: TinyProject) -> None:
    """`harness serve`'s config may hold `schedules:`: serve runs `harness night --config` on
    it every 30 s (cli/serve.py), which reads only that key."""
    from harness.triggers.config import load_triggers

    tiny.write_policy()
    tiny.add_spec("one")
    schedule = {"name": "nightly", "cron": "* * * * *", "specs": ["specs"],
                "until": "2001-01-01T06:00:00+00:00", "policy": "policy.yaml"}  # fmt: skip
    config = tiny.root / "triggers.yaml"
    github = {"secret_env": "GITHUB_WEBHOOK_SECRET", "repos": {}}
    config.write_text(yaml.safe_dump({"github": github, "schedules": [schedule]}), "utf-8")
    assert load_triggers(config).config.schedules[0].name == "nightly"
    # It last ran 3 minutes ago; nothing ran since: the 2 fires between are missed.
    minute = datetime.now().astimezone().replace(second=0, microsecond=0)
    tiny.runs.mkdir()
    store = open_store(f"sqlite:///{tiny.runs / 'harness.db'}")
    earlier = int((minute - timedelta(minutes=3)).timestamp())
    assert store.claim_fire("nightly", earlier, "w0", "nightly-before")
    store.finish_fire("nightly", earlier, "done")
    store.close()
    argv = ["night", "--config", str(config), "--runs-dir", str(tiny.runs)]
    result = run_cli(argv, tiny.root)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "schedule nightly" in result.stdout and ": ran nightly-" in result.stdout
    assert result.stdout.count(": missed: nothing was running at its time") >= 2
    [run_id] = [p.name for p in tiny.runs.iterdir() if p.name.startswith("nightly-")]
    assert tiny.task("one", run_id)["outcome"] == "skipped"
    digest = (tiny.runs / run_id / "report.md").read_text("utf-8")
    missed = digest.split("## Missed", 1)[1]
    assert missed.count("- nightly at ") >= 2 and "nothing was running" in missed
    again = run_cli(argv, tiny.root)  # the same minute: already fired
    assert f"ran {run_id}" not in again.stdout

"""Schedules: cron expressions that fire nights, from a night config's `schedules:` (or, later,
`harness serve`'s config: it calls `fire_due` the same way).

```yaml
schedules:
  - name: nightly
    cron: "0 22 * * 1-5"      # croniter syntax, local time
    specs: [specs/]            # relative to this file
    window: "22:00-06:00"      # or until: "06:00"
    budget_usd: 5
    policy: policies/demo.yaml
```

A fire is the pair (schedule, fire time). Whoever sees it due first inserts its row in the store
(the lease): it runs once, however many workers call `fire_due` at once. Fire times between the
last recorded one and now that nobody ran (nothing was running then) are recorded as missed,
and so is a due fire found later than `catch_up_s` after its time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import yaml
from croniter import croniter
from pydantic import Field, field_validator, model_validator

from harness.config.strict import StrictModel, parse_yaml_mapping
from harness.errors import InputError
from harness.night.window import parse_until, parse_window
from harness.store import Store

MAX_MISSED = 1000
"""Missed fires recorded per call at most (a minutely schedule idle for a year stops here)."""


class Schedule(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """Names the fire's lease and its runs (`<name>-<fire time>`)."""
    cron: str
    """When to fire: a cron expression (five fields, local time), e.g. "0 22 * * 1-5"."""
    specs: list[str] = Field(min_length=1)
    """Spec files or directories, relative to the config file."""
    until: str | None = None
    """The night's end: HH:MM (its next occurrence after the fire) or an ISO 8601 date-time."""
    window: str | None = None
    """Or the night's window, HH:MM-HH:MM."""
    budget_usd: float | None = Field(default=None, ge=0)
    """The night's spending cap in US dollars; none: no cap."""
    policy: str | None = None
    """The policy file, relative to the config file; default: as `harness run` finds it."""
    catch_up_s: float = Field(default=3600, gt=0)
    """A fire found due later than this after its time is recorded as missed, not run."""

    @field_validator("cron")
    @classmethod
    def _cron(cls, cron: str) -> str:
        if not croniter.is_valid(cron):
            raise ValueError(
                f"{cron!r} is not a cron expression; write five fields (minute hour day month "
                "weekday), e.g. '0 22 * * 1-5'"
            )
        return cron

    @model_validator(mode="after")
    def _one_end(self) -> Schedule:
        if (self.until is None) == (self.window is None):
            raise ValueError("give exactly one of until: HH:MM or window: HH:MM-HH:MM")
        try:
            if self.until is not None:
                parse_until(self.until, field="until")
            if self.window is not None:
                parse_window(self.window, field="window")
        except InputError as exc:
            raise ValueError(str(exc)) from None
        return self


class NightConfig(StrictModel):
    """A night config file: its `schedules:`."""

    schedules: list[Schedule] = Field(min_length=1)


SERVE_KEYS = frozenset({"workers", "duplicate_window_s", "github", "linear", "generic"})
"""`harness serve`'s own keys (harness.triggers.config): its config may hold `schedules:` too,
and `harness night --config` then reads only those."""


def load_night_config(path: Path) -> NightConfig:
    """A night config, or `harness serve`'s config and its `schedules:`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read the night config ({exc.strerror})") from None
    raw = yaml.safe_load(text) if text.strip() else None
    if isinstance(raw, dict) and SERVE_KEYS & raw.keys():
        text = yaml.safe_dump({"schedules": raw.get("schedules")})
    return parse_yaml_mapping(text, path, NightConfig, "with `schedules:`")


class ScheduleTicker:
    """Calls `tick` every `interval_s` seconds on a thread of its own until stopped: how a
    long-running process (`harness serve`) fires its schedules. A tick that raises is logged
    and the next one still comes."""

    def __init__(self, tick: Callable[[], None], interval_s: float = 30.0) -> None:
        self._tick = tick
        self._interval_s = interval_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="schedules", daemon=True)

    def start(self) -> ScheduleTicker:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopped.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self._tick()
            except Exception:
                logging.getLogger("harness.night").exception("firing the schedules failed")
            self._stopped.wait(self._interval_s)


@dataclass(frozen=True)
class Fire:
    schedule: str
    fire_at: datetime
    status: Literal["ran", "failed", "taken", "missed"]
    """ran/failed: this worker ran it; taken: another worker holds it; missed: nobody ran it."""
    run_id: str | None = None
    detail: str | None = None


FireRun = Callable[[Schedule, datetime, str], None]
"""Runs a fire's night: the schedule, the fire time, the run id. Raises to fail it."""


def run_id_of(schedule: Schedule, fire_at: datetime) -> str:
    return f"{schedule.name}-{fire_at.strftime('%Y%m%d-%H%M')}"


def fire_due(
    config: NightConfig, store: Store, owner: str, run: FireRun, now: datetime | None = None
) -> list[Fire]:
    """Fire what is due now, once across workers; record the fires missed since the last one."""
    now = now or datetime.now().astimezone()
    fires: list[Fire] = []
    for schedule in config.schedules:
        fires.extend(_fire_schedule(schedule, store, owner, run, now))
    return fires


def _fire_schedule(
    schedule: Schedule, store: Store, owner: str, run: FireRun, now: datetime
) -> list[Fire]:
    latest: datetime = croniter(schedule.cron, now).get_prev(datetime)
    recorded = {record.fire_at for record in store.fires(schedule.name)}
    fires: list[Fire] = []
    if recorded:
        since = datetime.fromtimestamp(max(recorded)).astimezone(now.tzinfo)
        times = croniter(schedule.cron, since)
        for _ in range(MAX_MISSED):
            missed: datetime = times.get_next(datetime)
            if missed >= latest:
                break
            detail = "nothing was running at its time"
            if store.record_missed(schedule.name, int(missed.timestamp()), detail):
                fires.append(Fire(schedule.name, missed, "missed", detail=detail))
    at = int(latest.timestamp())
    if at in recorded:
        return fires
    late = (now - latest).total_seconds()
    if late > schedule.catch_up_s:
        detail = f"found {late:.0f} s after its time, past catch_up_s {schedule.catch_up_s:.0f}"
        if store.record_missed(schedule.name, at, detail):
            fires.append(Fire(schedule.name, latest, "missed", detail=detail))
        return fires
    run_id = run_id_of(schedule, latest)
    if not store.claim_fire(schedule.name, at, owner, run_id):
        return [*fires, Fire(schedule.name, latest, "taken", run_id)]
    try:
        run(schedule, latest, run_id)
    except Exception as exc:  # recorded as failed, and the other schedules still fire
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())
        store.finish_fire(schedule.name, at, "failed", detail)
        return [*fires, Fire(schedule.name, latest, "failed", run_id, detail)]
    store.finish_fire(schedule.name, at, "done")
    return [*fires, Fire(schedule.name, latest, "ran", run_id)]

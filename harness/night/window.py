"""A night's window: when it ends (`--until HH:MM` or an ISO 8601 date-time) or when it runs
(`--window 22:00-06:00`). Times without a date are local; the result is an aware datetime."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from harness.errors import InputError

CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True)
class NightWindow:
    """From `start` to `end`; no task starts at or after `end`."""

    start: datetime
    end: datetime

    def over(self, now: datetime | None = None) -> bool:
        return (now or _now()) >= self.end

    def seconds_left(self, now: datetime | None = None) -> float:
        return (self.end - (now or _now())).total_seconds()


def _now() -> datetime:
    return datetime.now().astimezone()


def _clock(text: str, field: str) -> time | None:
    match = CLOCK.match(text.strip())
    return time(int(match.group(1)), int(match.group(2))) if match else None


def _next_occurrence(clock: time, now: datetime) -> datetime:
    """The clock time's next occurrence after `now` (within 24 hours), in local time."""
    at = now.replace(hour=clock.hour, minute=clock.minute, second=0, microsecond=0)
    return at if at > now else at + timedelta(days=1)


def parse_until(text: str, now: datetime | None = None, field: str = "--until") -> datetime:
    """`HH:MM` (its next occurrence, local time) or an ISO 8601 date-time (one without an
    offset is local). A date-time already past is returned as it is: the night is over."""
    now = now or _now()
    clock = _clock(text, field)
    if clock is not None:
        return _next_occurrence(clock, now)
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(
            f"{field}: {text!r} is not a time; write HH:MM (e.g. 06:00) or an ISO 8601 "
            "date-time (e.g. 2026-12-04T06:00:00+01:00)"
        ) from None
    return at if at.tzinfo is not None else at.astimezone()


def parse_window(text: str, now: datetime | None = None, field: str = "--window") -> NightWindow:
    """`HH:MM-HH:MM`, local time. Inside it now: it ends at the end's next occurrence. Before
    it: it starts at the start's next occurrence (the caller waits or refuses)."""
    now = now or _now()
    start_text, dash, end_text = text.partition("-")
    start, end = _clock(start_text, field), _clock(end_text, field)
    if not dash or start is None or end is None or start == end:
        raise InputError(
            f"{field}: {text!r} is not a window; write START-END as HH:MM-HH:MM, "
            "e.g. 22:00-06:00 (it may cross midnight)"
        )
    ends = _next_occurrence(end, now)
    length = (datetime.combine(now.date(), end) - datetime.combine(now.date(), start)) % timedelta(
        days=1
    )
    begins = ends - length
    if begins > now:  # not inside it now: it starts later today or tomorrow
        return NightWindow(begins, ends)
    return NightWindow(now, ends)


def window_from(until: str | None, window: str | None, now: datetime | None = None) -> NightWindow:
    """The night's window from `--until` or `--window` (exactly one)."""
    now = now or _now()
    if (until is None) == (window is None):
        raise InputError("harness night: give exactly one of --until HH:MM or --window HH:MM-HH:MM")
    if until is not None:
        return NightWindow(now, parse_until(until, now))
    assert window is not None
    return parse_window(window, now)

"""Repeatable jobs: cron expressions and fixed intervals, fired by every worker, once per tick.

There is no scheduler process and no leader: see :mod:`conveyor.worker.scheduler` for the
loop every worker runs and :mod:`conveyor.ops.schedules` for the compare-and-set that
enqueues each tick exactly once.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from . import serialization
from .ops.keys import validate_queue_name

MISSED_TOLERANCE_MS = 30_000
"""A tick fired later than this after its time counts as missed (see ``Schedule.missed``)."""

Missed = Literal["skip", "run_once"]


@dataclass(frozen=True, slots=True)
class Schedule:
    """A repeatable job: ``task`` with ``args`` on ``queue``, by ``cron`` or ``every`` seconds.

    ``missed`` says what happens to ticks that passed while no worker ran: ``"skip"`` them
    (the default; the schedule resumes at its next tick) or ``"run_once"`` (one job makes up
    for all of them).
    """

    name: str
    task: str
    queue: str = "default"
    cron: str | None = None
    every: float | None = None
    timezone: str = "UTC"
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    missed: Missed = "skip"
    priority: int = 0

    def __post_init__(self) -> None:
        validate_queue_name(self.queue)
        if not self.name or any(ch in self.name for ch in "{}@") or any(ch.isspace() for ch in self.name):
            raise ValueError(
                f"schedule name {self.name!r} must be non-empty, without braces, '@' or whitespace"
            )
        if (self.cron is None) == (self.every is None):
            raise ValueError("a schedule needs exactly one of cron= or every=")
        if self.cron is not None and (len(self.cron.split()) != 5 or not croniter.is_valid(self.cron)):
            raise ValueError(
                f"invalid cron expression {self.cron!r} (five fields: minute hour day month weekday)"
            )
        if self.every is not None and not (self.every > 0 and math.isfinite(self.every)):
            raise ValueError("every= must be a positive number of seconds")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.timezone!r}") from None
        if self.missed not in ("skip", "run_once"):
            raise ValueError("missed= must be 'skip' or 'run_once'")
        object.__setattr__(self, "args", tuple(self.args))

    def next_after(self, after_ms: int) -> int:
        """The first tick strictly after ``after_ms`` (ms since the epoch)."""
        if self.every is not None:
            step = max(1, round(self.every * 1000))
            return (after_ms // step + 1) * step
        assert self.cron is not None  # one of the two is set (checked at construction)
        start = datetime.fromtimestamp(after_ms / 1000, ZoneInfo(self.timezone))
        following: datetime = croniter(self.cron, start).get_next(datetime)
        return int(following.timestamp() * 1000)

    @property
    def description(self) -> str:
        if self.cron is not None:
            return f"cron {self.cron} ({self.timezone})"
        return f"every {self.every:g} s"

    def to_json(self) -> bytes:
        data = asdict(self)
        data["args"] = list(self.args)
        return serialization.dumps(data, what=f"schedule {self.name}")

    @classmethod
    def from_json(cls, raw: str | bytes) -> Schedule:
        data = serialization.loads(raw)
        data["args"] = tuple(data.get("args") or ())
        return cls(**data)


@dataclass(frozen=True, slots=True)
class ScheduleState:
    schedule: Schedule
    next_run: datetime | None

"""Repeatable jobs: cron expressions and fixed intervals, fired by every worker, once per tick.

There is no scheduler process and no leader. Each worker looks at the due schedules of its
queues and tries to fire them through ``schedule.lua``, which moves a schedule's next run
forward only if it still holds the tick the worker saw (compare-and-set) and gives the
tick's job a deterministic id (``name@tick``): however many workers race, each tick is
enqueued exactly once. Tick times are computed from the schedule alone (cron, or multiples
of the interval since the epoch), so every worker computes the same ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from redis.exceptions import RedisError

from . import serialization
from .executor import AsyncExecutor
from .keys import QueueKeys, validate_queue_name
from .operations import Command, Script, Step, as_dict
from .scripts import load

log = logging.getLogger("conveyor.schedules")

SCHEDULE = load("schedule")
MISSED_TOLERANCE_MS = 30_000
"""A tick fired later than this after its time counts as missed (see ``Schedule.missed``)."""
MAX_IDLE_SECONDS = 5.0
"""Schedulers look for new or changed schedules at least this often."""

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


def upsert(keys: QueueKeys, schedule: Schedule, now_ms: int) -> Generator[Step, Any, bool]:
    """Add or replace a schedule; returns True when it changed. An unchanged one keeps its
    next run, so restarting workers does not shift or repeat ticks."""
    spec = schedule.to_json().decode()
    old = yield Command(("HGET", keys.schedules, schedule.name))
    if old == spec:
        yield Command(("ZADD", keys.schedule_next, "NX", schedule.next_after(now_ms), schedule.name))
        return False
    yield Command(("HSET", keys.schedules, schedule.name, spec))
    yield Command(("ZADD", keys.schedule_next, schedule.next_after(now_ms), schedule.name))
    return True


def remove(keys: QueueKeys, name: str) -> Generator[Step, Any, bool]:
    removed = yield Command(("HDEL", keys.schedules, name))
    yield Command(("ZREM", keys.schedule_next, name))
    return bool(removed)


def list_all(keys: QueueKeys) -> Generator[Step, Any, list[ScheduleState]]:
    specs = as_dict((yield Command(("HGETALL", keys.schedules))))
    nexts = yield Command(("ZRANGE", keys.schedule_next, 0, -1, "WITHSCORES"))
    when = _scores(nexts)
    out = []
    for name in sorted(specs):
        next_ms = when.get(name)
        next_run = datetime.fromtimestamp(next_ms / 1000, UTC) if next_ms is not None else None
        out.append(ScheduleState(Schedule.from_json(specs[name]), next_run))
    return out


def _scores(reply: Any) -> dict[str, int]:
    if reply and isinstance(reply[0], list | tuple):  # redis-py: [(member, score), ...]
        return {str(m): int(float(sc)) for m, sc in reply}
    return {str(reply[i]): int(float(reply[i + 1])) for i in range(0, len(reply), 2)}


def fire_due(keys: QueueKeys, now_ms: int) -> Generator[Step, Any, int]:
    """Fire every schedule of the queue whose tick is due; returns ms until the next one (-1: none)."""
    due = _scores(
        (yield Command(("ZRANGEBYSCORE", keys.schedule_next, "-inf", now_ms, "WITHSCORES", "LIMIT", 0, 100)))
    )
    if due:
        specs = yield Command(("HMGET", keys.schedules, *due))
        for (name, tick), spec in zip(due.items(), specs, strict=True):
            if spec is None:  # removed meanwhile
                yield Command(("ZREM", keys.schedule_next, name))
                continue
            schedule = Schedule.from_json(spec)
            # A tick counts as missed when a later tick is already due too (nobody ran the
            # scheduler at its time), or when it is late beyond the tolerance. "skip" fires
            # only a tick that is the latest one due and on time; "run_once" fires one job
            # for all the ticks missed.
            latest = schedule.next_after(tick) > now_ms
            fire = schedule.missed == "run_once" or (latest and now_ms - tick <= MISSED_TOLERANCE_MS)
            outcome = yield from _tick(keys, schedule, tick, schedule.next_after(now_ms), fire)
            if outcome == 1:
                log.warning(
                    "schedule %s: skipped the tick of %s, missed while no worker ran",
                    name,
                    datetime.fromtimestamp(tick / 1000, UTC).isoformat(),
                )
    first = yield Command(("ZRANGE", keys.schedule_next, 0, 0, "WITHSCORES"))
    upcoming = _scores(first)
    return max(0, min(upcoming.values()) - now_ms) if upcoming else -1


def _tick(
    keys: QueueKeys, schedule: Schedule, tick: int, next_ms: int, fire: bool
) -> Generator[Step, Any, int]:
    extras: list[Any] = []
    if schedule.kwargs:
        extras += ("k", serialization.dumps(schedule.kwargs))
    if schedule.priority:
        extras += ("p", schedule.priority)
    reply = yield Script(
        SCHEDULE,
        (
            keys.waiting,
            keys.prioritized,
            keys.delayed,
            keys.marker,
            keys.sequence,
            keys.job_prefix,
            keys.events,
            keys.schedule_next,
            keys.group_prefix,
        ),
        (
            schedule.name,
            tick,
            next_ms,
            1 if fire else 0,
            f"{schedule.name}@{tick}",
            schedule.task,
            serialization.dumps(list(schedule.args)),
            len(extras) // 2,
            *extras,
        ),
    )
    return int(reply)


async def run_schedulers(
    executor: AsyncExecutor,
    keys: Sequence[QueueKeys],
    closing: asyncio.Event,
    declared: Mapping[str, Sequence[Schedule]],
) -> None:
    """The loop every worker runs: register the schedules declared on its tasks, then fire
    due ticks and sleep until the next one (at most ``MAX_IDLE_SECONDS``)."""
    for queue_keys in keys:
        for schedule in declared.get(queue_keys.queue, ()):
            await executor.run(upsert(queue_keys, schedule, int(time.time() * 1000)))
    while not closing.is_set():
        wait_ms = -1
        try:
            for queue_keys in keys:
                until = await executor.run(fire_due(queue_keys, int(time.time() * 1000)))
                if until >= 0:
                    wait_ms = until if wait_ms < 0 else min(wait_ms, until)
        except (OSError, RedisError) as exc:
            log.warning("scheduler: %s; will retry", exc)
        except Exception as exc:  # a bad schedule must not stop the worker
            log.error("scheduler: %s", exc)
        pause = MAX_IDLE_SECONDS if wait_ms < 0 else min(MAX_IDLE_SECONDS, wait_ms / 1000 + 0.001)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(closing.wait(), pause)

"""Schedules in Redis: register, remove, list, and fire due ticks exactly once.

Each worker looks at the due schedules of its queues and tries to fire them through
``schedule.lua``, which moves a schedule's next run forward only if it still holds the
tick the worker saw (compare-and-set) and gives the tick's job a deterministic id
(``name@tick``): however many workers race, each tick is enqueued exactly once. Tick times
are computed from the schedule alone (cron, or multiples of the interval since the
epoch), so every worker computes the same ones.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from datetime import UTC, datetime
from typing import Any

from ..schedules import MISSED_TOLERANCE_MS, Schedule, ScheduleState
from ..task import TaskCall
from .encode import encode_job
from .keys import QueueKeys
from .scripts import load
from .steps import Command, Script, Step, as_dict

log = logging.getLogger("conveyor.schedules")

SCHEDULE = load("schedule")


def upsert(keys: QueueKeys, schedule: Schedule, now_ms: int) -> Generator[Step, Any, bool]:
    """Add or replace a schedule; returns True when it changed. An unchanged one keeps its
    next run, so restarting workers does not shift or repeat ticks. Its first tick is the
    first one after ``now_ms``.

    A new next run wakes the queue's schedulers (the schedule marker, set after the next
    run is written): a scheduler with nothing due pauses up to ``MAX_IDLE_SECONDS`` and
    would otherwise fire a schedule added meanwhile only at its next look."""
    spec = schedule.to_json().decode()
    old = yield Command(("HGET", keys.schedules, schedule.name))
    if old == spec:
        added = yield Command(("ZADD", keys.schedule_next, "NX", schedule.next_after(now_ms), schedule.name))
        if added:
            yield Command(("ZADD", keys.schedule_marker, 0, "w"))
        return False
    yield Command(("HSET", keys.schedules, schedule.name, spec))
    yield Command(("ZADD", keys.schedule_next, schedule.next_after(now_ms), schedule.name))
    yield Command(("ZADD", keys.schedule_marker, 0, "w"))
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
    return {str(reply[i]): int(float(reply[i + 1])) for i in range(0, len(reply), 2)}


def fire_due(keys: QueueKeys, now_ms: int, looked_ms: int | None = None) -> Generator[Step, Any, int]:
    """Fire every schedule of the queue whose tick is due; returns ms until the next one (-1: none).

    ``looked_ms``: the ``now_ms`` of this scheduler's previous look at the queue, when it has
    run ever since (None: its first look). A tick after it was no more missed than an
    on-time one (see below)."""
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
            # for all the ticks missed. A tick that came due since this scheduler's previous
            # look was not missed by absent workers, though, even with later ones due: this
            # scheduler ran all along and learned of it late (a schedule added or changed
            # since that look, its wake-up lost) or looked late (a stalled event loop). It
            # fires if on time, its later ticks folded into its job as "run_once" does.
            latest = schedule.next_after(tick) > now_ms
            watched = looked_ms is not None and tick > looked_ms
            on_time = now_ms - tick <= MISSED_TOLERANCE_MS
            fire = schedule.missed == "run_once" or (on_time and (latest or watched))
            outcome = yield from _tick(keys, schedule, tick, schedule.next_after(now_ms), fire)
            if outcome == 1:
                when = datetime.fromtimestamp(tick / 1000, UTC).isoformat()
                if watched:
                    log.warning(
                        "schedule %s: skipped the tick of %s, %.0f s late (the scheduler could not run)",
                        name,
                        when,
                        (now_ms - tick) / 1000,
                    )
                else:
                    log.warning("schedule %s: skipped the tick of %s, missed while no worker ran", name, when)
    first = yield Command(("ZRANGE", keys.schedule_next, 0, 0, "WITHSCORES"))
    upcoming = _scores(first)
    return max(0, min(upcoming.values()) - now_ms) if upcoming else -1


def _tick(
    keys: QueueKeys, schedule: Schedule, tick: int, next_ms: int, fire: bool
) -> Generator[Step, Any, int]:
    # The tick's job is encoded as every job is; only the script's arguments around it differ.
    call: TaskCall[Any] = TaskCall(
        schedule.task, schedule.args, schedule.kwargs, schedule.queue, schedule.priority
    )
    job = encode_job(call, f"{schedule.name}@{tick}", None)
    reply = yield Script(
        SCHEDULE,
        keys.for_schedule,
        (
            schedule.name,
            tick,
            next_ms,
            1 if fire else 0,
            job.id,
            job.task,
            job.args,
            len(job.extras) // 2,
            *job.extras,
        ),
    )
    return int(reply)

"""Repeatable jobs: tick computation, exactly-once firing with several schedulers, missed ticks."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from conveyor import AsyncClient, Client, JobState, Schedule, Tasks
from conveyor.ops import schedules as sched

from helpers import running_worker, wait_until

pytestmark = pytest.mark.serial  # alone in make test (conftest.py): ticks that must fire on time


def ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def test_cron_ticks_follow_the_time_zone_across_dst() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    daily = Schedule("report", "make_report", cron="30 2 * * *", timezone="Europe/Berlin")
    before = datetime(2026, 3, 28, 12, 0, tzinfo=berlin)
    first = datetime.fromtimestamp(daily.next_after(ms(before)) / 1000, berlin)
    # 02:30 does not exist on 29 March in Berlin (clocks jump 02:00 -> 03:00): the day's run
    # happens once, at the jump, and the next day is back at 02:30.
    assert (first.day, first.hour, first.minute) == (29, 3, 0)
    second = datetime.fromtimestamp(daily.next_after(ms(first)) / 1000, berlin)
    assert (second.day, second.hour, second.minute) == (30, 2, 30)
    every = Schedule("tick", "t", every=60)
    assert (
        every.next_after(0) == 60_000
        and every.next_after(60_000) == 120_000
        and every.next_after(59_999) == 60_000
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"cron": "61 * * * *"}, "invalid cron"),
        ({"cron": "* * * * *", "every": 5}, "exactly one"),
        ({}, "exactly one"),
        ({"every": 0}, "positive"),
        ({"every": 5, "timezone": "Mars/Base"}, "unknown time zone"),
        ({"every": 5, "missed": "sometimes"}, "missed"),
    ],
)
def test_invalid_schedules_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Schedule("s", "t", **kwargs)  # type: ignore[arg-type]


async def test_each_tick_runs_exactly_once_with_four_schedulers(
    aclient: AsyncClient, url: str, queue: str
) -> None:
    tasks = Tasks(queue=queue)
    ran: list[str] = []

    @tasks.task(every=timedelta(milliseconds=200))
    async def heartbeat() -> None:
        from conveyor import current_job

        ran.append(current_job().id)

    async with (
        running_worker(tasks, url),
        running_worker(tasks, url),
        running_worker(tasks, url),
        running_worker(tasks, url),
    ):
        await asyncio.sleep(1.5)
    assert len(ran) == len(set(ran)), f"a tick ran twice: {sorted(ran)}"
    ticks = sorted(int(job_id.split("@")[1]) for job_id in ran)
    assert 3 <= len(ticks) <= 9, ticks
    assert all(b - a == 200 for a, b in itertools.pairwise(ticks)), f"no tick skipped: {ticks}"
    [state] = await aclient.schedules(queue)
    assert state.schedule.name == "heartbeat" and state.next_run is not None


def test_add_list_and_remove_at_run_time(client: Client, queue: str) -> None:
    nightly = Schedule("nightly", "cleanup", queue=queue, cron="0 3 * * *", args=(7,), missed="run_once")
    assert client.add_schedule(nightly) is True
    assert client.add_schedule(nightly) is False, "unchanged: keeps its next run"
    [state] = client.schedules(queue)
    assert state.schedule == nightly and state.next_run and state.next_run.hour == 3
    assert client.remove_schedule(queue, "nightly") and client.schedules(queue) == []


def test_missed_ticks_are_skipped_or_run_once(client: Client, queue: str) -> None:
    keys = client.keys(queue)
    now = int(time.time() * 1000)
    for name, missed in (("skipper", "skip"), ("catcher", "run_once")):
        client.add_schedule(Schedule(name, "work", queue=queue, every=60, missed=missed))  # type: ignore[arg-type]
        client.transport.call("ZADD", keys.schedule_next, now - 10 * 60_000, name)  # ten minutes of downtime
    wait_ms = client.run(sched.fire_due(keys, now))
    assert 0 < wait_ms <= 60_000
    jobs, total = client.list_jobs(queue, JobState.WAITING)
    assert total == 1 and jobs[0].task == "work" and jobs[0].id == f"catcher@{now - 10 * 60_000}"
    assert client.run(sched.fire_due(keys, now)) > 0 and client.counts(queue)["waiting"] == 1, "fired once"


def test_a_tick_superseded_by_a_later_one_counts_as_missed(client: Client, queue: str) -> None:
    """Down for two ticks of a 2 s schedule and back 0.3 s after the second: both are missed,
    though neither is late by the tolerance; "skip" runs nothing until the next tick."""
    keys = client.keys(queue)
    now = (int(time.time() * 1000) // 2000) * 2000 + 300  # 0.3 s after a tick
    for name, missed in (("skipper", "skip"), ("catcher", "run_once")):
        client.add_schedule(Schedule(name, "work", queue=queue, every=2, missed=missed))  # type: ignore[arg-type]
        client.transport.call("ZADD", keys.schedule_next, now - 2300, name)
    assert client.run(sched.fire_due(keys, now)) == 1700, "both wait for the tick at +2 s"
    jobs, total = client.list_jobs(queue, JobState.WAITING)
    assert total == 1 and jobs[0].id == f"catcher@{now - 2300}"
    # on time (the latest tick, 5 ms late): fired under either policy
    client.transport.call("ZADD", keys.schedule_next, now - 5, "skipper")
    client.run(sched.fire_due(keys, now))
    assert client.counts(queue)["waiting"] == 2


async def test_a_schedule_added_at_run_time_reaches_running_workers(
    aclient: AsyncClient, url: str, queue: str
) -> None:
    tasks = Tasks(queue=queue)
    seen: list[int] = []

    @tasks.task
    async def ping(n: int) -> None:
        seen.append(n)

    async with running_worker(tasks, url):
        await aclient.add_schedule(Schedule("pinger", "ping", queue=queue, every=0.2, args=(5,)))
        await wait_until(lambda: len(seen) >= 2, timeout=10)
    assert set(seen) == {5}


@pytest.mark.cluster_too
@pytest.mark.parametrize("position", ["first", "second"])
async def test_a_schedule_added_to_an_idle_scheduler_fires_its_next_tick_on_time(
    aclient: AsyncClient, url: str, queue: str, position: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker with no schedules of its own pauses its scheduler for up to 5 s: adding one
    wakes it, so the first tick after the add (every 1 s) runs on time, and nothing about it
    is reported missed. The worker serves two queues (two slots on a cluster), the schedule
    goes to either."""
    caplog.set_level(logging.INFO, logger="conveyor.schedules")
    other = f"{queue}-other"
    target = queue if position == "first" else other
    tasks = Tasks(queue=queue)
    ran: list[tuple[str, float]] = []

    @tasks.task
    async def ping(n: int) -> None:
        from conveyor import current_job

        ran.append((current_job().id, time.monotonic()))

    async with running_worker(tasks, url, queues=[queue, other]):
        # A job done: the loops run, so the scheduler has looked once and now pauses.
        await (await aclient.enqueue(ping, 0)).result(timeout=10)
        added = time.monotonic()
        await aclient.add_schedule(Schedule("pinger", "ping", queue=target, every=1, args=(1,)))
        [state] = await aclient.schedules(target)
        assert state.next_run is not None
        first_tick = f"pinger@{ms(state.next_run)}"
        await wait_until(lambda: any(job_id.startswith("pinger@") for job_id, _ in ran), timeout=8)
    job_id, at = next((job_id, at) for job_id, at in ran if job_id.startswith("pinger@"))
    assert job_id == first_tick, "the first tick after the add runs, none before it"
    assert at - added < 1.5, f"the first tick ran {at - added:.2f} s after the add"
    missed = [
        r.getMessage() for r in caplog.records if "missed" in r.getMessage() or "skipped" in r.getMessage()
    ]
    assert missed == []


def test_ticks_due_since_the_schedulers_last_look_were_not_missed(
    client: Client, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A scheduler that looked at the queue 2.5 s ago and ran since finds two ticks of a 1 s
    schedule due: it learned of them late (a schedule added since), no worker was absent, so
    "skip" fires one job and nothing is reported missed. Ticks that were due already at its
    previous look, or later than the tolerance, are still judged as before."""
    caplog.set_level(logging.INFO, logger="conveyor.schedules")
    keys = client.keys(queue)
    now = (int(time.time() * 1000) // 1000) * 1000 + 300  # 0.3 s after a tick
    client.add_schedule(Schedule("fresh", "work", queue=queue, every=1))
    client.transport.call("ZADD", keys.schedule_next, now - 1300, "fresh")  # added at now - 1.5 s
    assert client.run(sched.fire_due(keys, now, looked_ms=now - 2500)) == 700
    jobs, total = client.list_jobs(queue, JobState.WAITING)
    assert total == 1 and jobs[0].id == f"fresh@{now - 1300}"
    assert [r.getMessage() for r in caplog.records] == []

    # due at the previous look already: that look would have fired it, had it run -- missed
    client.transport.call("ZADD", keys.schedule_next, now - 1300, "fresh")
    client.run(sched.fire_due(keys, now, looked_ms=now - 1000))
    assert client.counts(queue)["waiting"] == 1
    tick = datetime.fromtimestamp((now - 1300) / 1000, UTC).isoformat()
    assert [r.getMessage() for r in caplog.records] == [
        f"schedule fresh: skipped the tick of {tick}, missed while no worker ran"
    ]
    caplog.clear()
    # beyond the tolerance: skipped, though the scheduler ran (it could not look in time)
    client.transport.call("ZADD", keys.schedule_next, now - 40_300, "fresh")
    client.run(sched.fire_due(keys, now, looked_ms=now - 60_000))
    assert client.counts(queue)["waiting"] == 1
    [record] = caplog.records
    assert "40 s late" in record.getMessage() and "no worker ran" not in record.getMessage()


def test_adding_or_changing_a_schedule_wakes_the_schedulers(client: Client, raw: Any, queue: str) -> None:
    keys = client.keys(queue)
    every = Schedule("s", "work", queue=queue, every=60)
    assert client.add_schedule(every) and raw.zcard(keys.schedule_marker) == 1, "added"
    raw.delete(keys.schedule_marker)
    assert not client.add_schedule(every) and raw.zcard(keys.schedule_marker) == 0, "unchanged"
    assert client.add_schedule(Schedule("s", "work", queue=queue, every=1)), "changed"
    assert raw.zcard(keys.schedule_marker) == 1
    raw.delete(keys.schedule_marker)
    raw.zrem(keys.schedule_next, "s")  # the spec unchanged, its next run gone: written again
    assert not client.add_schedule(Schedule("s", "work", queue=queue, every=1))
    assert raw.zcard(keys.schedule_marker) == 1
    assert client.remove_schedule(queue, "s") and raw.zcard(keys.schedule_marker) == 1, "removal: no wake"


@pytest.mark.cluster_too
async def test_a_closing_worker_stops_waiting_at_once_and_hands_the_wake_up_on(
    aclient: AsyncClient, raw: Any, url: str, queue: str
) -> None:
    """The scheduler waits in Redis for up to 5 s; a stop ends the wait at once, and sets the
    markers again, as the cancelled wait may have taken a wake-up another worker needs."""
    other = f"{queue}-other"
    tasks = Tasks(queue=queue)

    @tasks.task
    async def ping() -> None:
        pass

    async with running_worker(tasks, url, queues=[queue, other]) as worker:
        await (await aclient.enqueue(ping)).result(timeout=10)
        await asyncio.sleep(0.2)
        assert raw.zcard(worker.keys[queue].schedule_marker) == 0
        worker.stop()
        stopping = time.monotonic()
    # Its wait had over 4.5 s to go; redis-py's cluster client, which now and then absorbs a
    # cancellation, ends it at its next piece (2.5 s at most, conveyor.redis.waits).
    assert time.monotonic() - stopping < 4.0
    assert (
        raw.zcard(worker.keys[queue].schedule_marker) == 1
        and raw.zcard(worker.keys[other].schedule_marker) == 1
    )

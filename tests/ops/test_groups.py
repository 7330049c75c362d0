"""Group keys: round-robin fairness between groups, per-group limits held across workers,
and grouped jobs moving through every state like any other job (claim.lua and friends)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict

import pytest
import redis

from conveyor import AsyncClient, Client, JobState, Tasks, ops

from helpers import running_worker, wait_until

pytestmark = pytest.mark.serial  # alone in make test (conftest.py): start times within 0.3 s


def _claim(client: Client, queue: str, n: int) -> list[ops.Claimed]:
    jobs = client.run(ops.claim(client.keys(queue), n, 30_000, "w-test")).jobs
    return jobs


def test_groups_are_served_round_robin(client: Client, tasks: Tasks, queue: str) -> None:
    @tasks.task
    def work(label: str) -> None: ...

    calls = [work.with_options(group="big").call(f"big-{i}") for i in range(10)]
    calls += [work.with_options(group="small").call(f"small-{i}") for i in range(3)]
    calls += [work.with_options(group="tiny").call("tiny-0")]
    client.enqueue_many(calls)
    assert client.counts(queue)["waiting"] == 14

    order = []
    for _ in range(14):
        (job,) = _claim(client, queue, 1)
        order.append(json.loads(job.args)[0])
    labels = [label.split("-")[0] for label in order]
    assert labels == ["big", "small", "tiny", "big", "small", "big", "small"] + ["big"] * 7, labels
    # FIFO inside each group
    bigs = [label for label in order if label.startswith("big")]
    assert bigs == [f"big-{i}" for i in range(10)]
    assert _claim(client, queue, 5) == []


def test_one_claim_takes_from_every_group_and_the_ungrouped_line(
    client: Client, tasks: Tasks, queue: str
) -> None:
    @tasks.task
    def work() -> None: ...

    client.enqueue_many([work.with_options(group=g).call() for g in "abc" for _ in range(5)])
    client.enqueue_many([work.call() for _ in range(5)])
    jobs = _claim(client, queue, 8)
    groups = [client.get_job(queue, job.id).group for job in jobs]
    # half from the groups, one per group per turn; half from the ungrouped line
    assert sorted(g for g in groups if g) == ["a", "a", "b", "c"]
    assert groups.count(None) == 4


async def test_a_small_tenant_is_not_starved_by_a_big_one(
    aclient: AsyncClient, tasks: Tasks, url: str, queue: str
) -> None:
    """The issue's split: 100,000 jobs of one tenant enqueued first, then 10 of another."""
    done: dict[str, int] = defaultdict(int)
    big_done_when_small_finished = -1

    @tasks.task
    async def serve(tenant: str) -> None:
        nonlocal big_done_when_small_finished
        done[tenant] += 1
        if tenant == "small" and done["small"] == 10:
            big_done_when_small_finished = done["big"]

    big = serve.with_options(group="big")
    for start in range(0, 100_000, 20_000):
        await aclient.enqueue_many([big.call("big") for _ in range(start, start + 20_000)])
    await aclient.enqueue_many([serve.with_options(group="small").call("small") for _ in range(10)])
    assert (await aclient.counts(queue))["waiting"] == 100_010

    async with running_worker(tasks, url, concurrency=20):
        await wait_until(lambda: done["small"] == 10, timeout=20)
    # Round-robin: each small job waits behind at most one big job per turn, plus what was
    # already claimed or running when it arrived (one claim batch of 20).
    assert big_done_when_small_finished <= 60, big_done_when_small_finished
    assert (await aclient.counts(queue))["waiting"] >= 99_000
    await aclient.purge(queue)
    assert (await aclient.counts(queue))["waiting"] == 0


async def test_group_concurrency_holds_across_workers_without_blocking_others(
    aclient: AsyncClient, tasks: Tasks, url: str, queue: str
) -> None:
    running: dict[str, int] = defaultdict(int)
    peak: dict[str, int] = defaultdict(int)
    finished: dict[str, float] = {}

    @tasks.task
    async def hold(tenant: str, seconds: float) -> None:
        running[tenant] += 1
        peak[tenant] = max(peak[tenant], running[tenant])
        await asyncio.sleep(seconds)
        running[tenant] -= 1
        finished[tenant] = time.monotonic()

    await aclient.set_limits(queue, group_concurrency=2)
    assert await aclient.settings_of(queue) == {"group_concurrency": 2}
    slow = [hold.with_options(group="slow").call("slow", 0.15) for _ in range(12)]
    fast = [hold.with_options(group="fast").call("fast", 0.0) for _ in range(12)]
    async with (
        running_worker(tasks, url, concurrency=10),
        running_worker(tasks, url, concurrency=10),
        running_worker(tasks, url, concurrency=10),
    ):
        handles = await aclient.enqueue_many(slow + fast)
        for handle in handles:
            await handle.result(timeout=20)
    assert peak["slow"] == 2, f"at most 2 slow jobs at once across 3 workers, saw {peak['slow']}"
    assert peak["fast"] <= 2
    # 12 slow jobs two at a time take at least 6 x 0.15 s; the fast group was not held behind them.
    assert finished["fast"] < finished["slow"] - 0.4
    await aclient.set_limits(queue, group_concurrency=None)
    assert await aclient.settings_of(queue) == {}


async def test_group_rate_limit_per_window(aclient: AsyncClient, tasks: Tasks, url: str, queue: str) -> None:
    starts: dict[str, list[float]] = defaultdict(list)

    @tasks.task
    async def tick(tenant: str) -> None:
        starts[tenant].append(time.monotonic())

    await aclient.set_limits(queue, group_rate=(3, 0.5))
    calls = [tick.with_options(group=t).call(t) for t in ("a", "b") for _ in range(9)]
    async with running_worker(tasks, url), running_worker(tasks, url):
        handles = await aclient.enqueue_many(calls)
        for handle in handles:
            await handle.result(timeout=10)
    for tenant in ("a", "b"):
        times = sorted(starts[tenant])
        assert len(times) == 9
        assert times[-1] - times[0] > 0.9, "9 jobs at 3 per 0.5 s need three windows"
        for i in range(len(times) - 3):
            assert times[i + 3] - times[i] > 0.3, f"no 4 starts of {tenant} within one window"
    # Each group has its own window: b did not wait for a's windows.
    assert abs(min(starts["a"]) - min(starts["b"])) < 0.3


def test_grouped_jobs_in_every_state(client: Client, tasks: Tasks, queue: str, raw: redis.Redis) -> None:
    @tasks.task
    def work() -> None: ...

    keys = client.keys(queue)
    grouped = work.with_options(group="t1")
    handles = client.enqueue_many([grouped.call() for _ in range(4)])
    delayed = client.enqueue(grouped.with_options(delay=0.05))
    assert client.counts(queue)["waiting"] == 4
    page, total = client.list_jobs(queue, JobState.WAITING, offset=1, limit=2)
    assert total == 4 and [job.id for job in page] == [handles[1].id, handles[2].id]
    assert all(job.group == "t1" for job in page)

    assert client.cancel(queue, handles[0].id) == "cancelled"
    assert client.remove(queue, handles[1].id) == JobState.WAITING
    assert client.counts(queue)["waiting"] == 2

    time.sleep(0.06)
    jobs = _claim(client, queue, 10)  # promotes the delayed job into its group's line
    assert sorted(job.id for job in jobs) == sorted([handles[2].id, handles[3].id, delayed.id])
    assert raw.hget(keys.group_prefix + "active", "t1") == "3"

    # finish one, fail one into a retry, hand one back: the group's running count follows.
    token = {job.id: job.token for job in jobs}
    client.run(ops.complete(keys, ops.Retention(-1, -1), [(jobs[0].id, token[jobs[0].id], b"null")]))
    client.run(
        ops.fail(keys, ops.Retention(-1, -1), [(jobs[1].id, token[jobs[1].id], b"{}", 0, ops.NOT_DEFERRED)])
    )
    client.run(ops.requeue(keys, [(jobs[2].id, token[jobs[2].id])]))
    assert raw.hget(keys.group_prefix + "active", "t1") is None
    assert client.counts(queue)["waiting"] == 2
    again = _claim(client, queue, 10)
    assert sorted(job.id for job in again) == sorted([jobs[1].id, jobs[2].id])

    # a lost lease: the sweep re-delivers it into its group's line
    raw.zadd(keys.active, {again[0].id: 1})
    recovered, *_ = client.run(ops.sweep(keys, 3, ops.Retention(-1, -1)))
    assert recovered == [again[0].id]
    assert raw.hget(keys.group_prefix + "active", "t1") == "1"
    assert client.counts(queue)["waiting"] == 1

    assert client.purge(queue, states=[JobState.WAITING]) == 1
    assert client.counts(queue)["waiting"] == 0
    assert raw.scard(keys.group_prefix + "known") == 0
    assert raw.zcard(keys.group_prefix + "ring") == 0


def test_bad_group_keys_are_refused(tasks: Tasks) -> None:
    @tasks.task
    def work() -> None: ...

    for bad in ("", "a{b}", "line\nbreak", "x" * 257):
        with pytest.raises(ValueError, match="group key"):
            work.with_options(group=bad)

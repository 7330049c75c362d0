"""Suspects: jobs that lost their worker too often run only alone (sweep.lua, claim.lua).

A job that kills its worker takes every job held by that worker with it. The sweep sends a
job lost ``alone_after`` times to the suspects line; the claim hands a suspect only to a
worker that holds nothing, and alone, and tells busy workers to make room for it when it
has waited too long. Everything a user sees treats a suspect as a waiting job.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis

from conveyor import AsyncClient, Client, JobState, Tasks, ops

from helpers import running_worker, wait_until

pytestmark = pytest.mark.serial  # alone in make test (conftest.py): job spans timed

KEEP = ops.Retention(-1, -1)
MINUTE = 60_000


def work_task(queue: str, **options: object) -> object:
    tasks = Tasks(queue=queue)

    @tasks.task
    async def work(n: int) -> int:
        return n

    return work.with_options(**options) if options else work  # type: ignore[arg-type]


def lose_worker(client: Client, raw: redis.Redis, queue: str, jobs: list[ops.Claimed], **sweep: int) -> None:
    """The worker holding ``jobs`` died: their leases run out and a sweep recovers them."""
    keys = client.keys(queue)
    raw.zadd(keys.active, {job.id: 0 for job in jobs})
    recovered, dead, *_ = client.run(ops.sweep(keys, 3, KEEP, **sweep))
    assert sorted(recovered) == sorted(job.id for job in jobs) and dead == []


def claim(client: Client, queue: str, n: int, *, idle: bool, make_room_ms: int = MINUTE) -> ops.Claim:
    return client.run(ops.claim(client.keys(queue), n, MINUTE, "w", idle=idle, make_room_ms=make_room_ms))


def make_suspects(client: Client, raw: redis.Redis, queue: str, n: int) -> list[str]:
    """``n`` jobs claimed in one batch, then lost with their worker twice: the default
    ``alone_after`` for max_crashes 3 is 2, a job's last chance."""
    work = work_task(queue)
    handles = client.enqueue_many([work.call(i) for i in range(n)])  # type: ignore[attr-defined]
    for crash in (1, 2):
        batch = claim(client, queue, n, idle=True)
        assert not batch.alone and len(batch.jobs) == n, f"lost {crash - 1} times: still claimed in a batch"
        lose_worker(client, raw, queue, batch.jobs)
    return [h.id for h in handles]


def test_a_job_at_its_last_chance_is_handed_out_alone_and_only_to_an_idle_worker(
    client: Client, raw: redis.Redis, queue: str
) -> None:
    suspects = make_suspects(client, raw, queue, 3)
    keys = client.keys(queue)
    assert raw.zcard(keys.suspects) == 3 and raw.llen(keys.waiting) == 0
    fresh = client.enqueue_many([work_task(queue).call(i) for i in range(5)])  # type: ignore[attr-defined]

    busy = claim(client, queue, 10, idle=False)
    assert [j.id for j in busy.jobs] == [h.id for h in fresh], "a busy worker gets the other jobs only"
    assert not busy.alone and 0 < busy.wait_ms <= MINUTE, "it looks again when a suspect is due a room"

    served = []
    for _ in range(3):
        alone = claim(client, queue, 10, idle=True)
        assert alone.alone and len(alone.jobs) == 1, "an idle worker gets one suspect and nothing else"
        assert alone.jobs[0].attempts == 3
        served.append(alone.jobs[0].id)
    assert sorted(served) == sorted(suspects)
    assert claim(client, queue, 10, idle=True).jobs == [], "nothing else waits"
    assert client.get_job(queue, served[0]).crashes == 2


def test_a_job_lost_once_goes_back_in_line_as_before(client: Client, raw: redis.Redis, queue: str) -> None:
    work = work_task(queue)
    client.enqueue_many([work.call(i) for i in range(3)])  # type: ignore[attr-defined]
    lose_worker(client, raw, queue, claim(client, queue, 3, idle=True).jobs)
    assert raw.zcard(client.keys(queue).suspects) == 0
    again = claim(client, queue, 3, idle=False)
    assert len(again.jobs) == 3 and not again.alone


def test_alone_after_1_isolates_every_job_of_a_lost_worker(
    client: Client, raw: redis.Redis, queue: str
) -> None:
    work = work_task(queue)
    client.enqueue_many([work.call(i) for i in range(3)])  # type: ignore[attr-defined]
    lose_worker(client, raw, queue, claim(client, queue, 3, idle=True).jobs, alone_after=1)
    assert raw.zcard(client.keys(queue).suspects) == 3
    assert len(claim(client, queue, 3, idle=True).jobs) == 1


def test_a_busy_worker_is_told_to_make_room_one_at_a_time(
    client: Client, raw: redis.Redis, queue: str
) -> None:
    make_suspects(client, raw, queue, 1)
    client.enqueue_many([work_task(queue).call(i) for i in range(4)])  # type: ignore[attr-defined]
    told = claim(client, queue, 10, idle=False, make_room_ms=0)
    assert told.alone and told.jobs == [], "it waited long enough: this busy worker makes room"
    # The suspect's wait starts again: the next busy worker is told only make_room_ms later.
    other = claim(client, queue, 2, idle=False, make_room_ms=MINUTE)
    assert len(other.jobs) == 2 and not other.alone
    time.sleep(0.02)
    assert claim(client, queue, 2, idle=False, make_room_ms=10).alone


def test_a_suspect_is_a_waiting_job_to_users(client: Client, raw: redis.Redis, queue: str) -> None:
    suspects = make_suspects(client, raw, queue, 4)
    client.enqueue(work_task(queue), 99)  # type: ignore[arg-type]
    assert client.get_job(queue, suspects[0]).state is JobState.WAITING
    assert client.counts(queue)["waiting"] == 5
    listed, total = client.list_jobs(queue, "waiting", 0, 10)
    assert total == 5 and {j.id for j in listed[:4]} == set(suspects), "suspects are listed first"
    page, _ = client.list_jobs(queue, "waiting", 3, 10)
    assert len(page) == 2
    assert client.cancel(queue, suspects[0]) == "cancelled"
    assert client.remove(queue, suspects[1]) is JobState.WAITING
    assert raw.zcard(client.keys(queue).suspects) == 2
    assert client.purge(queue) == 3
    assert raw.zcard(client.keys(queue).suspects) == 0 and client.counts(queue)["waiting"] == 0
    assert claim(client, queue, 10, idle=True).jobs == [], "nothing cancelled or removed is handed out"


def test_a_suspect_stays_one_until_it_ends(client: Client, raw: redis.Redis, queue: str) -> None:
    [suspect] = make_suspects(client, raw, queue, 1)
    keys = client.keys(queue)
    for _ in range(2):  # a retry at once, a retry after a delay: back to the suspects line
        [job] = claim(client, queue, 5, idle=True).jobs
        client.run(ops.fail(keys, KEEP, [(job.id, job.token, b"{}", 0, ops.NOT_DEFERRED)]))
        assert raw.zscore(keys.suspects, suspect) is not None
        [job] = claim(client, queue, 5, idle=True).jobs
        client.run(ops.fail(keys, KEEP, [(job.id, job.token, b"{}", 60_000, ops.NOT_DEFERRED)]))
        assert client.promote(queue, suspect) == "waiting"
        assert raw.zscore(keys.suspects, suspect) is not None
    [job] = claim(client, queue, 5, idle=True).jobs
    client.run(ops.fail(keys, KEEP, [(job.id, job.token, b"{}", 1, ops.NOT_DEFERRED)]))
    time.sleep(0.01)
    assert claim(client, queue, 5, idle=False).jobs == [], "due again: promoted to the suspects line"
    [job] = claim(client, queue, 5, idle=True).jobs
    assert client.run(ops.requeue(keys, [(job.id, job.token)])) == 1, "a stopping worker hands it back"
    assert raw.zscore(keys.suspects, suspect) is not None
    [job] = claim(client, queue, 5, idle=True).jobs
    client.run(ops.fail(keys, KEEP, [(job.id, job.token, b"{}", -1, ops.NOT_DEFERRED)]))
    assert client.retry(queue, [suspect]) == 1
    assert raw.zcard(keys.suspects) == 0, "retried by hand: a fresh start, no longer a suspect"
    assert client.get_job(queue, suspect).crashes == 0


def test_a_grouped_suspect_keeps_its_group_limit(client: Client, raw: redis.Redis, queue: str) -> None:
    work = work_task(queue, group="g")
    client.enqueue(work, 1)  # type: ignore[arg-type]
    lose_worker(client, raw, queue, claim(client, queue, 1, idle=True).jobs, alone_after=1)
    client.set_limits(queue, group_concurrency=1)
    [running] = claim(client, queue, 1, idle=True).jobs  # the suspect, alone
    client.enqueue(work, 2)  # type: ignore[arg-type]
    lose_worker(client, raw, queue, [running], alone_after=1)
    [other] = claim(client, queue, 1, idle=False).jobs  # the group's one running job
    blocked = claim(client, queue, 1, idle=True)
    assert blocked.jobs == [] and not blocked.alone, "its group is at its limit: the suspect waits"
    client.run(ops.complete(client.keys(queue), KEEP, [(other.id, other.token, b"0")]))
    assert [j.id for j in claim(client, queue, 1, idle=True).jobs] == [running.id]


async def test_a_worker_runs_a_suspect_alone(
    aclient: AsyncClient, tasks: Tasks, url: str, queue: str
) -> None:
    """Through a real worker: nothing else runs on the worker while the suspect runs."""
    spans: dict[str, tuple[float, float]] = {}

    @tasks.task
    async def work(label: str) -> None:
        started = time.monotonic()
        await asyncio.sleep(0.2 if label == "suspect" else 0.05)
        spans[label] = (started, time.monotonic())

    keys = aclient.keys(queue)
    suspect = await aclient.enqueue(work, "suspect")
    [claimed] = (await aclient.run(ops.claim(keys, 1, MINUTE, "gone"))).jobs
    await aclient.transport.call("ZADD", keys.active, 0, claimed.id)
    await aclient.run(ops.sweep(keys, 3, KEEP, alone_after=1))
    await aclient.enqueue_many([work.call(f"other-{i}") for i in range(10)])
    async with running_worker(tasks, url, concurrency=10):
        await wait_until(lambda: len(spans) == 11)
    start, end = spans.pop("suspect")
    assert all(s >= end or e <= start for s, e in spans.values()), (start, end, sorted(spans.values()))
    assert (await aclient.get_job(queue, suspect.id)).state is JobState.COMPLETED


def test_suspects_on_redis_cluster(cluster: Any, queue: str) -> None:
    """Every key the suspects touch carries the queue's hash tag: the scripts run on Cluster."""
    with Client.from_url(cluster.url) as client:
        work = work_task(queue)
        client.enqueue_many([work.call(i) for i in range(3)])  # type: ignore[attr-defined]
        keys = client.keys(queue)
        batch = client.run(ops.claim(keys, 3, MINUTE, "gone")).jobs
        for job in batch:
            client.transport.call("ZADD", keys.active, 0, job.id)
        recovered, *_ = client.run(ops.sweep(keys, 3, KEEP, alone_after=1))
        assert len(recovered) == 3 and client.counts(queue)["waiting"] == 3
        listed, _ = client.list_jobs(queue, "waiting")
        assert len(listed) == 3
        alone = client.run(ops.claim(keys, 3, MINUTE, "w", idle=True))
        assert alone.alone and len(alone.jobs) == 1
        assert client.cancel(queue, listed[-1].id) in ("cancelled", "aborting")
        assert client.purge(queue) >= 1


async def test_a_busy_worker_makes_room_for_a_suspect(
    aclient: AsyncClient, tasks: Tasks, url: str, queue: str
) -> None:
    """A worker that is never idle (a backlog keeps it busy) still runs the suspect, alone,
    soon after it waited make_room_after, not only once the backlog is gone."""
    spans: dict[str, tuple[float, float]] = {}

    @tasks.task
    async def work(label: str) -> None:
        started = time.monotonic()
        await asyncio.sleep(0.05)
        spans[label] = (started, time.monotonic())

    keys = aclient.keys(queue)
    await aclient.enqueue(work, "suspect")
    [lost] = (await aclient.run(ops.claim(keys, 1, MINUTE, "gone"))).jobs
    await aclient.enqueue_many([work.call(f"other-{i}") for i in range(100)])
    async with running_worker(tasks, url, concurrency=2, alone_after=1, make_room_after=0.1):
        await wait_until(lambda: len(spans) >= 2)
        await aclient.transport.call("ZADD", keys.active, 0, lost.id)  # its worker is gone
        await wait_until(lambda: len(spans) == 101, timeout=30)
    start, end = spans.pop("suspect")
    assert all(s >= end or e <= start for s, e in spans.values()), "it ran alone"
    assert sum(1 for s, _ in spans.values() if s >= end) >= 20, "it did not wait for the backlog to drain"


async def test_a_worker_stops_making_room_once_another_took_the_suspect(
    aclient: AsyncClient, tasks: Tasks, url: str, queue: str
) -> None:
    started: dict[str, float] = {}

    @tasks.task
    async def work(label: str, seconds: float = 0.0) -> None:
        started[label] = time.monotonic()
        await asyncio.sleep(seconds)

    keys = aclient.keys(queue)
    await aclient.enqueue(work, "suspect")
    [lost] = (await aclient.run(ops.claim(keys, 1, MINUTE, "gone"))).jobs
    async with running_worker(tasks, url, concurrency=5, alone_after=1, make_room_after=0.1) as worker:
        await aclient.enqueue(work, "long", 3.0)
        await wait_until(lambda: "long" in started)
        await aclient.transport.call("ZADD", keys.active, 0, lost.id)  # its worker is gone
        await wait_until(lambda: worker._held.alone, timeout=5)  # told to make room: it drains
        taken = await aclient.run(ops.claim(keys, 1, MINUTE, "another", idle=True))
        assert [j.id for j in taken.jobs] == [lost.id]
        await aclient.enqueue_many([work.call(f"quick-{i}") for i in range(3)])
        await wait_until(lambda: len(started) == 4, timeout=5)
        assert time.monotonic() - started["long"] < 3.0, "it claimed again while its long job ran"

"""The same product on Redis Cluster and behind Sentinel, through their URLs."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from redis.crc import key_slot

from conveyor import AsyncClient, Client, JobState, Tasks, Worker

from helpers import running_worker, wait_until


def build(queue: str) -> tuple[Tasks, Any, Any]:
    tasks = Tasks(queue=queue)

    @tasks.task
    async def add(x: int, y: int) -> int:
        return x + y

    @tasks.task
    def shout(text: str) -> str:
        return text.upper()

    return tasks, add, shout


@pytest.fixture(params=["cluster", "sentinel"])
def topology_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(request.param).url)


async def test_enqueue_work_and_results(topology_url: str, queue: str) -> None:
    tasks, add, shout = build(queue)
    async with AsyncClient.from_url(topology_url) as client:
        handle = await client.enqueue(add, 2, 40)
        many = await client.enqueue_many([shout.call(f"w{i}") for i in range(500)])
        again = await client.enqueue(add.with_options(job_id=handle.id), 0, 0)
        assert not again.created
        async with running_worker(tasks, topology_url):
            assert await handle.result(timeout=10) == 42
            assert await many[-1].result(timeout=10) == "W499"
        counts = await client.counts(queue)
        assert counts["completed"] == 501 and counts["active"] == 0


def test_sync_client_and_inspection(topology_url: str, queue: str) -> None:
    _, add, _ = build(queue)
    with Client.from_url(topology_url) as client:
        handle = client.enqueue(add.with_options(delay=60), 1, 1)
        assert client.get_job(queue, handle.id).state is JobState.DELAYED
        assert queue in client.queues()
        jobs, total = client.list_jobs(queue, "delayed")
        assert total == 1 and jobs[0].id == handle.id
        assert client.purge(queue) == 1


async def test_cluster_worker_blocks_on_queues_in_different_slots(cluster: Any, queue: str) -> None:
    tasks = Tasks(queue=queue + "-a")

    @tasks.task
    async def tag(value: str) -> str:
        return value

    other = tag.with_options(queue=queue + "-b")
    async with (
        AsyncClient.from_url(cluster.url) as client,
        running_worker(tasks, cluster.url, queues=[queue + "-a", queue + "-b"]),
    ):
        await asyncio.sleep(0.3)  # idle: blocked on both markers
        handle = await client.enqueue(other, "b")
        assert await handle.result(timeout=5) == "b"
        handle = await client.enqueue(tag, "a")
        assert await handle.result(timeout=5) == "a"


async def test_script_flush_mid_run_loses_nothing(
    cluster: Any, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    """SCRIPT FLUSH on every node while a worker drains a queue and producers enqueue:
    every script call that meets NOSCRIPT reloads and runs again, so no operation fails
    (nothing raised, nothing logged) and every job completes."""
    tasks, add, _ = build(queue)
    with Client.from_url(cluster.url) as sync_client:
        async with AsyncClient.from_url(cluster.url) as client:
            await client.enqueue_many([add.call(i, 1) for i in range(300)])
            sync_client.enqueue(add, 0, 0)  # both producers have loaded the scripts
            # Not burst: a burst worker may drain the 301 and exit before the two late jobs.
            worker = Worker(tasks, url=cluster.url, concurrency=20)
            serving = asyncio.create_task(worker.serve())
            await wait_until(lambda: worker.processed > 50)
            for node in cluster.nodes:
                with Client.from_url(f"redis://:{node.password}@127.0.0.1:{node.port}") as direct:
                    direct.transport.call("SCRIPT", "FLUSH")
                    assert direct.transport.call("SCRIPT", "EXISTS", enqueue_sha()) == [0]
            await client.enqueue(add, 1, 1)  # NOSCRIPT: reloaded, then run
            await asyncio.to_thread(sync_client.enqueue, add, 2, 2)
            try:
                await wait_until(lambda: worker.processed >= 303, timeout=30)
            finally:
                worker.stop()
                await asyncio.wait_for(serving, 30)
            assert worker.processed == 303
            assert (await client.counts(queue))["completed"] == 303
    noisy = [r for r in caplog.records if r.name.startswith("conveyor") and r.levelno >= logging.WARNING]
    assert noisy == [], [r.getMessage() for r in noisy]


def enqueue_sha() -> str:
    from conveyor.ops.scripts import load

    return load("enqueue").sha


async def test_groups_and_flows_across_slots(topology_url: str, queue: str) -> None:
    """Fair groups with a per-group limit, and a chord whose children live on other queues
    (on a cluster: other slots, reached through the outbox rather than one script)."""
    from conveyor import chord, current_job

    tasks = Tasks(queue=queue)
    others = [f"{queue}-x{i}" for i in range(3)]

    @tasks.task
    async def square(n: int) -> int:
        return n * n

    @tasks.task
    async def total(results: list[int]) -> dict[str, Any]:
        return {"sum": sum(results), "queues": sorted({c.queue for c in current_job().children})}

    async with AsyncClient.from_url(topology_url) as client:
        await client.set_limits(queue, group_concurrency=1)
        grouped = await client.enqueue_many(
            [square.with_options(group=f"tenant-{i % 3}").call(i) for i in range(30)]
        )
        group = [square.with_options(queue=others[i % 3]).call(i) for i in range(6)]
        flow = await client.enqueue_flow(chord(group, total.call()))
        async with running_worker(tasks, topology_url, queues=[queue, *others]):
            assert await flow.job.result(timeout=15) == {"sum": 55, "queues": sorted(others)}
            for handle in grouped:
                await handle.result(timeout=15)
        assert (await client.counts(queue))["waiting_children"] == 0


async def test_thirty_queues_over_all_nodes_served_by_one_worker(cluster: Any, queue: str) -> None:
    """30 queues whose slots land on all three primaries, drained by one worker: every job
    runs exactly once and ends completed."""
    names = [f"{queue}-{i}" for i in range(30)]
    tasks = Tasks(queue=names[0])
    ran: dict[str, int] = {}

    @tasks.task
    async def record(job: str) -> str:
        ran[job] = ran.get(job, 0) + 1
        return job

    async with AsyncClient.from_url(cluster.url) as client:
        slots = [key_slot(client.keys(n).waiting.encode()) for n in names]
        owners = [cluster.owner(slot) for slot in slots]
        assert len(set(slots)) == 30
        assert sorted(set(owners)) == [0, 1, 2], f"queues on nodes {sorted(set(owners))} only"
        calls = [record.with_options(queue=n).call(f"{n}/{j}") for n in names for j in range(20)]
        handles = await client.enqueue_many(calls)
        worker = Worker(tasks, url=cluster.url, queues=names, burst=True, concurrency=50)
        await asyncio.wait_for(worker.serve(), 60)
        assert worker.processed == 600
        assert sorted(ran) == sorted(call.args[0] for call in calls) and set(ran.values()) == {1}
        for name in names:
            counts = await client.counts(name)
            assert counts["completed"] == 20 and sum(counts.values()) == 20, (name, counts)
        for handle in handles:
            assert (await client.get_job(handle.queue, handle.id)).state is JobState.COMPLETED

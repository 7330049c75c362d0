"""Leases renewed from the heartbeat thread (conveyor/heartbeat.py), seen from Redis.

A watcher thread with its own client samples a job's lease deadline (its score in the active
set) against the clock while the worker's event loop is blocked by the job itself. The
servers run on this machine, so the local clock is Redis's clock.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest
import redis.asyncio

from conveyor import AsyncClient, Client, Tasks, Worker, current_job
from conveyor.errors import ConfigurationError
from conveyor.ops.lifecycle import EXTEND
from conveyor.redis.endpoint import Endpoint
from conveyor.redis.resp_async import FastAsyncTransport

from helpers import running_worker, wait_until

pytestmark = pytest.mark.serial  # alone in make test (conftest.py): lease renewals timed against the clock

LEASE = 1.0


class LeaseWatch(threading.Thread):
    """Samples ``deadline - now`` (ms) of one job's lease every 50 ms while it is active."""

    def __init__(self, url: str, queue: str, job_id: str) -> None:
        super().__init__(daemon=True)
        self.client = Client.from_url(url)
        self.active_key = self.client.keys(queue).active
        self.job_id = job_id
        self.margins: list[float] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            score = self.client.transport.call("ZSCORE", self.active_key, self.job_id)
            if score is not None:
                self.margins.append(float(score) - time.time() * 1000)

    def __enter__(self) -> LeaseWatch:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.join()
        self.client.close()


def blocking_tasks(queue: str) -> tuple[Tasks, Any]:
    tasks = Tasks(queue=queue)

    @tasks.task
    async def block(seconds: float) -> str:
        time.sleep(seconds)  # noqa: ASYNC251 -- on purpose: the loop is blocked
        return "done"

    return tasks, block


@pytest.fixture(params=["plain", "cluster", "sentinel"])
def any_url(request: pytest.FixtureRequest) -> str:
    if request.param == "plain":
        return str(request.getfixturevalue("url"))
    return str(request.getfixturevalue(request.param).url)


async def test_leases_stay_renewed_while_the_loop_is_blocked(any_url: str, queue: str) -> None:
    tasks, block = blocking_tasks(queue)
    async with AsyncClient.from_url(any_url) as client:
        handle = await client.enqueue(block, 3 * LEASE)  # the loop blocked for three leases
        with LeaseWatch(any_url, queue, handle.id) as watch:
            async with running_worker(tasks, any_url, lease=LEASE):
                assert await handle.result(timeout=15) == "done"
        job = await client.get_job(queue, handle.id)
    assert job.attempts == 1
    assert len(watch.margins) > 20, "the watcher saw the job active"
    # Renewed every third of the lease, so at least about two thirds of it always remain.
    assert min(watch.margins) > 0, watch.margins


async def test_a_hung_loop_stops_renewing(
    url: str, tasks: Tasks, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Past max_loop_block the loop counts as hung: its leases run out, like a dead worker's,
    and renewal resumes once the loop runs again."""

    @tasks.task
    async def hang_once() -> None:
        if current_job().attempt == 1:  # a re-delivery (the worker's own sweep may win) is quick
            time.sleep(4.0)  # noqa: ASYNC251 -- on purpose: the loop is blocked

    caplog.set_level(logging.WARNING, logger="conveyor.worker")
    async with AsyncClient.from_url(url) as client:
        handle = await client.enqueue(hang_once)
        with LeaseWatch(url, queue, handle.id) as watch:
            async with running_worker(tasks, url, lease=LEASE, max_loop_block=1.5):
                await wait_until(lambda: "renewing leases again" in caplog.text, timeout=10)
    assert "it looks hung" in caplog.text
    assert min(watch.margins) < 0, "the lease ran out while the loop was hung"


async def test_a_lost_lease_reaches_the_loop(
    url: str, tasks: Tasks, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    started = threading.Event()

    @tasks.task
    def slow() -> None:
        started.set()
        time.sleep(2 * LEASE)

    caplog.set_level(logging.WARNING, logger="conveyor.worker")
    async with AsyncClient.from_url(url) as client:
        handle = await client.enqueue(slow)
        async with running_worker(tasks, url, lease=LEASE) as worker:
            await asyncio.to_thread(started.wait, 5)
            assert [h.job_id for h in worker._held[queue].values()] == [handle.id]
            # A newer attempt owns the job now (what a re-delivery does to the token).
            await client.transport.call("HSET", client.keys(queue).job_prefix + handle.id, "tk", "newer")
            await wait_until(lambda: not worker._held[queue], timeout=3)
    assert f"job {queue}/{handle.id}: its lease was lost" in caplog.text


@pytest.mark.single_node("reads one server's CLIENT LIST for the thread's connection")
async def test_shutdown_joins_the_thread_and_closes_its_connection(url: str, tasks: Tasks) -> None:
    def connections(client: Client) -> list[str]:
        return str(client.transport.call("CLIENT", "LIST")).splitlines()

    with Client.from_url(url) as client:
        before = len(connections(client))
        async with running_worker(tasks, url, lease=LEASE) as worker:
            await asyncio.sleep(LEASE)  # a few beats
            assert worker._heartbeat.thread.is_alive()
            # Each beat ends with the registry's ZADD, on the thread's own connection.
            assert any(" cmd=zadd " in line for line in connections(client))
        assert not worker._heartbeat.thread.is_alive()
        assert "conveyor-heartbeat" not in [t.name for t in threading.enumerate()]
        await wait_until(lambda: len(connections(client)) == before, timeout=3)


@pytest.mark.single_node("builds the fast single-server transport from the URL")
async def test_a_worker_on_a_given_connection(url: str, queue: str) -> None:
    """The thread's connection is derived from a Conveyor transport; a redis-py asyncio client
    needs the URL as well, and the worker says so before it claims anything."""
    tasks, block = blocking_tasks(queue)
    async with AsyncClient.from_url(url) as client:
        transport = FastAsyncTransport(Endpoint.from_url(url))
        handle = await client.enqueue(block, 2 * LEASE)
        worker = Worker(tasks, connection=transport, lease=LEASE, burst=True)
        await asyncio.wait_for(worker.serve(), 15)
        await transport.aclose()
        assert (await client.get_job(queue, handle.id)).attempts == 1

        foreign = redis.asyncio.Redis.from_url(url, decode_responses=True)
        try:
            with pytest.raises(ConfigurationError, match="pass url= too"):
                await Worker(tasks, connection=foreign, burst=True).serve()
            handle = await client.enqueue(block, 0.1)
            await asyncio.wait_for(Worker(tasks, connection=foreign, url=url, burst=True).serve(), 15)
            assert await handle.result(timeout=1) == "done"
        finally:
            await foreign.aclose()


@pytest.mark.single_node("flushes one server's scripts (test_topologies flushes a cluster's)")
async def test_renewals_survive_a_script_flush(url: str, tasks: Tasks, queue: str) -> None:
    """The beat sends its scripts by SHA together with the registry commands; after SCRIPT
    FLUSH (a restart, a failover) the script is loaded again and the lease still renewed."""
    started = threading.Event()

    @tasks.task
    def slow() -> None:
        started.set()
        time.sleep(2.5 * LEASE)

    async with AsyncClient.from_url(url) as client:
        handle = await client.enqueue(slow)
        with LeaseWatch(url, queue, handle.id) as watch:
            async with running_worker(tasks, url, lease=LEASE):
                await asyncio.to_thread(started.wait, 5)
                await client.transport.call("SCRIPT", "FLUSH")
                await handle.result(timeout=10)
        assert (await client.get_job(queue, handle.id)).attempts == 1
    assert min(watch.margins) > 0, watch.margins


@pytest.mark.single_node("reads one server's script cache")
async def test_the_thread_is_warm_before_the_first_job_starts(url: str, tasks: Tasks, queue: str) -> None:
    """The thread connects and loads extend.lua before the worker claims anything, so the first
    renewal is one round trip like the others (not a connect plus NOSCRIPT, each a wait for
    the GIL, just as the first jobs' threads start)."""
    seen: list[Any] = []

    @tasks.task
    def first() -> None:
        with Client.from_url(url) as own:
            seen.append(own.transport.call("SCRIPT", "EXISTS", EXTEND.sha))

    async with AsyncClient.from_url(url) as client:
        await client.transport.call("SCRIPT", "FLUSH")
        handle = await client.enqueue(first)
        # A 10 s lease: without the warm-up, the first beat would come 3.3 s after the start.
        async with running_worker(tasks, url, lease=10.0):
            await handle.result(timeout=10)
    assert seen == [[1]]

"""Redis out of memory (issue 5, test 13): ``maxmemory`` small, ``noeviction``.

[enqueue fails with a clear typed error, nothing half-written; once memory is freed,
enqueues work again. The warning at worker start for other policies is
``test_worker.py::test_warns_when_redis_may_evict_jobs``.]
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis

from conveyor import AsyncClient, Client, Tasks
from conveyor.errors import OutOfMemory

from helpers import running_worker, wait_until


def test_enqueue_under_oom_raises_a_typed_error_and_writes_nothing(server_factory: Any) -> None:
    server = server_factory(
        appendonly=False, extra_args=("--maxmemory", "3mb", "--maxmemory-policy", "noeviction")
    )
    tasks = Tasks(queue="oom")

    @tasks.task
    async def work(text: str) -> int: ...

    raw = redis.Redis(port=server.port, password=server.password, decode_responses=True)
    with Client.from_url(server.url) as client:
        keys = client.keys("oom")
        accepted = 0
        with pytest.raises(OutOfMemory, match="out of memory") as caught:
            for _ in range(10_000):
                client.enqueue_many([work.call("x" * 1000) for _ in range(100)])
                accepted += 100
        assert accepted > 0 and "nothing was written" in str(caught.value)

        def stored() -> tuple[int, int]:
            jobs = sum(1 for _ in raw.scan_iter(match=keys.job_prefix + "*", count=1000))
            return jobs, raw.llen(keys.waiting)

        assert stored() == (accepted, accepted), "every job hash is in waiting, none half-written"
        with pytest.raises(OutOfMemory):  # single enqueues too (the edge moves a little)
            for _ in range(1000):
                client.enqueue(work, "x" * 1000)
                accepted += 1
        assert stored() == (accepted, accepted)
        raw.config_set("maxmemory", "0")  # the operator frees memory
        client.enqueue(work, "after")
        assert stored() == (accepted + 1, accepted + 1)


async def test_worker_waits_out_oom_and_finishes_once_memory_is_freed(server_factory: Any) -> None:
    server = server_factory(
        appendonly=False, extra_args=("--maxmemory", "3mb", "--maxmemory-policy", "noeviction")
    )
    tasks = Tasks(queue="oom-worker")

    @tasks.task
    async def work(text: str) -> int:
        return len(text)

    raw = redis.Redis(port=server.port, password=server.password)
    async with AsyncClient.from_url(server.url) as client:
        accepted = 0
        with pytest.raises(OutOfMemory):
            for _ in range(10_000):
                await client.enqueue_many([work.call("x" * 1000) for _ in range(100)])
                accepted += 100
        async with running_worker(tasks, server.url, concurrency=20) as worker:
            # Results and acknowledgements are writes too: refused while Redis is full.
            await asyncio.sleep(1.5)
            loops = {t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("conveyor-")}
            assert {"conveyor-fetch", "conveyor-flush"} <= loops, "no loop died"
            assert worker._heartbeat.thread.is_alive(), "the heartbeat thread did not die"
            raw.config_set("maxmemory", "0")  # the operator frees memory
            await wait_until(lambda: raw.zcard(client.keys("oom-worker").completed) == accepted, timeout=30)
            assert worker.processed >= accepted

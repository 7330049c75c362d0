"""A worker loop that dies of an error it cannot wait out stops the worker, loudly.

Found by the chaos suites: the claim, acknowledgement and heartbeat loops ended on errors
they did not expect (a payload option of the wrong type, OOM, a Cluster redirection
budget) and the worker went on heartbeating, looking alive, without claiming or
acknowledging anything. Whatever the next such error is, the worker now stops and
``serve`` raises it, so the process exits non-zero and a supervisor restarts it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
from redis.exceptions import ResponseError

from conveyor import AsyncClient, Tasks, Worker


async def test_a_dead_claim_loop_stops_the_worker_and_serve_raises(server_factory: Any) -> None:
    server = server_factory(appendonly=False)
    tasks = Tasks(queue="dead-loop")

    @tasks.task
    async def work() -> None: ...

    raw = redis.Redis(port=server.port, password=server.password)
    async with AsyncClient.from_url(server.url) as client:
        await client.enqueue(work)
        raw.set(client.keys("dead-loop").active, "not a sorted set")  # every claim now fails: WRONGTYPE
        worker = Worker(tasks, url=server.url, lease=2, sweep_interval=0.5, shutdown_grace=1)
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await asyncio.wait_for(worker.serve(), 15)
        assert isinstance(worker.loop_failure, ResponseError)

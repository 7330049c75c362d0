"""Durable enqueue (issue 5, test 8, the opt-in part): WAIT for replica acknowledgement.

With ``durable_replicas=1`` an enqueue returns only once the replica has the job, and
raises a typed ``NotDurable`` (naming the jobs, which do exist on the primary) when the
replica does not acknowledge in time -- here, a replica frozen with SIGSTOP.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest
import redis

from conveyor import AsyncClient, Client, Tasks
from conveyor.errors import NotDurable


@pytest.fixture
def primary_and_replica(server_factory: Any) -> Any:
    primary = server_factory(appendonly=False, extra_args=("--repl-diskless-sync-delay", "0"))
    replica = server_factory(
        appendonly=False,
        password=primary.password,
        extra_args=("--replicaof", "127.0.0.1", str(primary.port), "--masterauth", primary.password),
    )
    raw = redis.Redis(port=primary.port, password=primary.password, decode_responses=True)
    deadline = time.monotonic() + 10
    while raw.info("replication").get("slave0", {}).get("state") != "online":
        assert time.monotonic() < deadline, "replica did not connect"
        time.sleep(0.05)
    raw.set("warm-up", 1)  # the first write after a full sync takes about a second to be acknowledged
    assert raw.wait(1, 5000) == 1
    yield primary, replica
    os.kill(replica.process.pid, signal.SIGCONT)
    raw.close()


def tasks_for(queue: str) -> Any:
    tasks = Tasks(queue=queue)

    @tasks.task
    async def work(n: int) -> int: ...

    return work


def test_durable_enqueue_waits_for_the_replica_and_says_when_it_did_not(primary_and_replica: Any) -> None:
    primary, replica = primary_and_replica
    work = tasks_for("durable")
    with Client.from_url(primary.url, durable_replicas=1, durable_timeout_ms=300) as client:
        handle = client.enqueue(work, 1)
        assert client.get_job("durable", handle.id).state.value == "waiting"
        assert len(client.enqueue_many([work.call(i) for i in range(500)])) == 500
        os.kill(replica.process.pid, signal.SIGSTOP)  # the replica stops acknowledging
        started = time.monotonic()
        with pytest.raises(NotDurable, match="only 0 of 1 replicas") as caught:
            client.enqueue(work, 2)
        assert 0.25 <= time.monotonic() - started < 5
        [job_id] = caught.value.job_ids
        assert client.get_job("durable", job_id).state.value == "waiting", "on the primary, not durable"
        os.kill(replica.process.pid, signal.SIGCONT)
        client.enqueue(work, 3)
    with Client.from_url(primary.url) as plain:  # not durable: the primary's word is enough
        os.kill(replica.process.pid, signal.SIGSTOP)
        started = time.monotonic()
        plain.enqueue(work, 4)
        assert time.monotonic() - started < 0.25


async def test_durable_enqueue_async(primary_and_replica: Any) -> None:
    primary, replica = primary_and_replica
    work = tasks_for("durable-async")
    async with AsyncClient.from_url(primary.url, durable_replicas=1, durable_timeout_ms=300) as client:
        await client.enqueue(work, 1)
        os.kill(replica.process.pid, signal.SIGSTOP)
        with pytest.raises(NotDurable):
            await client.enqueue_many([work.call(i) for i in range(10)])
        os.kill(replica.process.pid, signal.SIGCONT)
        await client.enqueue(work, 2)

"""A cluster's refusals are waited out, within a bound (``conveyor.redis.refusals``).

A slot is held half-migrated -- one of the queue's keys already on the target node, the
rest on the source -- so every script of the queue gets TRYAGAIN, on both faces, for as
long as the test chooses. Before Conveyor waited refusals out, redis-py's own budget
(about 0.4 s) ran out and the producer got ``ClusterError: TTL exhausted``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from redis.exceptions import ClusterError

from conveyor import AsyncClient, Client, ClusterUnavailable, Tasks
from conveyor.redis.refusals import refused

pytestmark = pytest.mark.serial  # alone in make test (conftest.py): waits timed, a node frozen by SIGSTOP

HOLD = 1.0


def half_migrate(cluster: Any, client: Client, queue: str) -> tuple[int, int, int]:
    """One job in ``queue``, then its slot MIGRATING with the waiting list already moved."""
    tasks = Tasks(queue=queue)

    @tasks.task
    def noop() -> None: ...

    client.enqueue(noop)
    slot = int(client.transport.call("CLUSTER", "KEYSLOT", "{" + queue + "}"))
    source, target = cluster.begin_migration(slot, [client.keys(queue).waiting])
    return slot, source, target


def finish_later(cluster: Any, slot: int, source: int, target: int) -> threading.Thread:
    thread = threading.Thread(
        target=lambda: (time.sleep(HOLD), cluster.finish_migration(slot, source, target)), daemon=True
    )
    thread.start()
    return thread


def test_sync_enqueue_waits_out_a_half_migrated_slot(cluster: Any, queue: str) -> None:
    tasks = Tasks(queue=queue)

    @tasks.task
    def noop() -> None: ...

    with Client.from_url(cluster.url) as client:
        slot, source, target = half_migrate(cluster, client, queue)
        finisher = finish_later(cluster, slot, source, target)
        started = time.monotonic()
        handles = client.enqueue_many([noop.call() for _ in range(10)])
        waited = time.monotonic() - started
        finisher.join()
        assert waited > HOLD * 0.8, f"returned after {waited:.2f} s: the slot was not half-migrated?"
        assert len(handles) == 10 and all(h.created for h in handles)
        assert cluster.owner(slot) == target
        assert client.counts(queue)["waiting"] == 11  # each job once


async def test_async_enqueue_waits_out_a_half_migrated_slot(cluster: Any, queue: str) -> None:
    tasks = Tasks(queue=queue)

    @tasks.task
    async def noop() -> None: ...

    with Client.from_url(cluster.url) as setup:
        slot, source, target = half_migrate(cluster, setup, queue)
    finisher = finish_later(cluster, slot, source, target)
    async with AsyncClient.from_url(cluster.url) as client:
        started = time.monotonic()
        handle = await client.enqueue(noop)
        waited = time.monotonic() - started
        finisher.join()
        assert waited > HOLD * 0.8, f"returned after {waited:.2f} s: the slot was not half-migrated?"
        assert handle.created
        assert (await client.counts(queue))["waiting"] == 2


@pytest.mark.parametrize("face", ["sync", "async"])
async def test_a_refusal_longer_than_the_bound_is_a_typed_error_and_writes_nothing(
    cluster: Any, queue: str, face: str
) -> None:
    tasks = Tasks(queue=queue)

    @tasks.task
    def noop() -> None: ...

    with Client.from_url(cluster.url) as setup:
        slot, source, target = half_migrate(cluster, setup, queue)
        try:
            started = time.monotonic()
            with pytest.raises(ClusterUnavailable) as raised:
                if face == "sync":
                    with Client.from_url(cluster.url, cluster_wait_ms=300) as client:
                        client.enqueue(noop)
                else:
                    async with AsyncClient.from_url(cluster.url, cluster_wait_ms=300) as aclient:
                        await aclient.enqueue(noop)
            waited = time.monotonic() - started
        finally:
            cluster.finish_migration(slot, source, target)
        assert 0.3 <= waited < 5, waited
        assert isinstance(raised.value, ClusterError)  # what callers caught before
        assert refused(raised.value.__cause__)  # type: ignore[arg-type]
        assert "did not run" in str(raised.value)
        assert setup.counts(queue)["waiting"] == 1  # the refused enqueue wrote nothing


def test_only_refusals_count_as_refused() -> None:
    from redis.exceptions import (
        AskError,
        ClusterDownError,
        MovedError,
        ResponseError,
        TryAgainError,
    )
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    assert refused(TryAgainError("Multiple keys request during rehashing of slot"))
    assert refused(MovedError("3999 127.0.0.1:6381"))
    assert refused(AskError("3999 127.0.0.1:6381"))
    assert refused(ClusterDownError("The cluster is down"))
    assert refused(ClusterError("TTL exhausted."))
    # The command may have run: retrying could run it twice.
    assert not refused(RedisConnectionError("Connection reset by peer"))
    assert not refused(RedisTimeoutError("Timeout reading from socket"))
    assert not refused(ClusterError("some other cluster trouble"))
    assert not refused(ResponseError("ERR something"))


async def test_the_api_takes_its_bound_from_the_environment(cluster: Any) -> None:
    from conveyor.api.service import ApiService
    from conveyor.api.settings import ApiSettings

    settings = ApiSettings.from_env({"CONVEYOR_REDIS_URL": cluster.url, "CONVEYOR_CLUSTER_WAIT_MS": "500"})
    service = ApiService(settings)
    try:
        assert service.client.transport.cluster_wait == 0.5  # type: ignore[attr-defined]
    finally:
        await service.aclose()


def test_a_command_that_timed_out_is_not_sent_again(cluster: Any, queue: str) -> None:
    """After a timeout the command may have run; sending it again is not safe. redis-py's
    cluster client did by default: the enqueue ran twice, the second run found its ids
    taken, and the client made the jobs again under new ids -- two jobs from one call, no
    error. Now the caller gets the timeout (the job may exist, as the README says)."""
    import os
    import signal

    from redis.crc import key_slot
    from redis.exceptions import TimeoutError as RedisTimeoutError

    tasks = Tasks(queue=queue)

    @tasks.task
    def noop() -> None: ...

    with Client.from_url(cluster.url + "?socket_timeout=0.3") as client:
        client.enqueue(noop)  # scripts loaded, slots known
        node = cluster.nodes[cluster.owner(key_slot(client.keys(queue).waiting.encode()))]
        os.kill(node.process.pid, signal.SIGSTOP)  # frozen past the timeout, then back
        thaw = threading.Timer(0.6, os.kill, (node.process.pid, signal.SIGCONT))
        thaw.start()
        try:
            with pytest.raises(RedisTimeoutError):
                client.enqueue(noop)
        finally:
            thaw.join()
        time.sleep(0.3)  # the frozen node runs what reached it
        assert client.counts(queue)["waiting"] == 2  # the first job, and the one that timed out

"""The hand-off and the archiver: finished jobs reach the store from a real Redis, each once,
with their attempts, whatever Redis keeps of them, through crashes and database outages.
Every test runs on SQLite and on PostgreSQL (the ``store`` fixture)."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta
from typing import Any

import pytest

from conveyor import AsyncClient, Client, Fixed, JobState, Tasks, Worker, ops
from conveyor.errors import ConfigurationError
from conveyor.history import AttemptOutcome, FinalState, HistoryStore, JobRecord, SearchQuery
from conveyor.history.archiver import Archiver
from conveyor.ops import history as handoff

KEEP = ops.Retention(-1, -1)


async def drain(tasks: Tasks, url: str, **options: Any) -> None:
    """Run a worker until the queue is empty."""
    await asyncio.wait_for(Worker(tasks, url=url, burst=True, lease=5, **options).serve(), 30)


async def records(store: HistoryStore, queue: str) -> dict[str, JobRecord]:
    page = await store.search(SearchQuery(queue=queue, limit=1000))
    return {record.id: record for record in page.items}


async def archive(aclient: AsyncClient, store: HistoryStore, queue: str, **options: Any) -> Archiver:
    archiver = Archiver(aclient, store, {queue: aclient.keys(queue)}, **options)
    await archiver.enable()
    return archiver


async def test_every_way_a_job_ends_is_recorded_once_with_its_attempts(
    aclient: AsyncClient, store: HistoryStore, tasks: Tasks, url: str, queue: str
) -> None:
    archiver = await archive(aclient, store, queue)
    calls: dict[str, int] = {}

    @tasks.task(retries=2, backoff=Fixed(0))
    async def flaky(name: str, fail_times: int) -> str:
        calls[name] = calls.get(name, 0) + 1
        if calls[name] <= fail_times:
            raise RuntimeError(f"{name} failed on call {calls[name]}")
        return name.upper()

    ok = await aclient.enqueue(flaky, "ok", 0)
    retried = await aclient.enqueue(flaky, "retried", 1)
    dead = await aclient.enqueue(flaky, "dead", 5)
    cancelled = await aclient.enqueue(flaky.with_options(delay=60), "cancelled", 0)
    removed = await aclient.enqueue(flaky.with_options(delay=60), "removed", 0)
    expired = await aclient.enqueue(flaky.with_options(ttl=0.001), "expired", 0)
    await asyncio.sleep(0.01)
    await aclient.cancel(queue, cancelled.id, reason="not needed")
    await aclient.remove(queue, removed.id)
    await drain(tasks, url)
    assert (await dead.fetch()).state is JobState.FAILED

    assert await archiver.drain() == 6
    stored = await records(store, queue)
    assert {job_id: r.state for job_id, r in stored.items()} == {
        ok.id: FinalState.COMPLETED,
        retried.id: FinalState.COMPLETED,
        dead.id: FinalState.FAILED,
        cancelled.id: FinalState.CANCELLED,
        removed.id: FinalState.REMOVED,
        expired.id: FinalState.EXPIRED,
    }
    assert stored[ok.id].result == '"OK"' and stored[ok.id].attempts == 1
    assert stored[ok.id].arguments is not None and '"ok"' in str(stored[ok.id].arguments)
    assert stored[ok.id].wait_ms is not None and stored[ok.id].run_ms is not None

    full = await store.get(queue, retried.id)
    assert full is not None and full.attempts == 2 and full.error_type is None
    assert [(a.attempt, a.outcome) for a in full.attempt_log] == [
        (1, AttemptOutcome.RETRIED),
        (2, AttemptOutcome.COMPLETED),
    ]
    assert full.attempt_log[0].error_type == "RuntimeError"
    assert full.attempt_log[0].error_message == "retried failed on call 1"
    assert all(a.worker for a in full.attempt_log)

    dead_record = await store.get(queue, dead.id)
    assert dead_record is not None and dead_record.attempts == 3
    assert dead_record.error_type == "RuntimeError" and "dead failed on call 3" in (
        dead_record.error_message or ""
    )
    assert dead_record.traceback and "RuntimeError" in dead_record.traceback
    assert [a.outcome for a in dead_record.attempt_log] == [
        AttemptOutcome.RETRIED,
        AttemptOutcome.RETRIED,
        AttemptOutcome.FAILED,
    ]
    cancelled_record = stored[cancelled.id]
    assert cancelled_record.attempts == 0 and cancelled_record.error_message == "not needed"
    assert cancelled_record.scheduled_for is not None
    assert stored[expired.id].error_type == "Expired"

    backlog = await aclient.run(handoff.backlog(aclient.keys(queue)))
    assert backlog.enabled and (backlog.jobs, backlog.entries, backlog.pending, backlog.dropped) == (
        0,
        0,
        0,
        0,
    )


async def test_the_hand_off_holds_what_redis_retention_deletes_at_once(
    aclient: AsyncClient, store: HistoryStore, tasks: Tasks, url: str, queue: str
) -> None:
    archiver = await archive(aclient, store, queue)

    @tasks.task
    async def work(n: int) -> int:
        return n * 2

    handles = await aclient.enqueue_many([work.call(n) for n in range(50)])
    await drain(tasks, url, completed=ops.Retention(0, 0))
    raw = aclient.transport
    assert await raw.call("EXISTS", aclient.keys(queue).job(handles[0].id)) == 0, "deleted at once"
    assert await archiver.drain() == 50
    stored = await records(store, queue)
    assert sorted(r.result for r in stored.values() if r.result) == sorted(str(n * 2) for n in range(50))


async def test_history_off_writes_no_hand_off(
    aclient: AsyncClient, tasks: Tasks, url: str, queue: str
) -> None:
    @tasks.task
    async def work() -> None:
        return None

    await aclient.enqueue(work)
    await drain(tasks, url)
    keys = aclient.keys(queue)
    assert await aclient.transport.call("EXISTS", keys.history, keys.history_feed) == 0


async def test_a_lost_worker_and_a_schedule_are_in_the_record(
    aclient: AsyncClient, store: HistoryStore, tasks: Tasks, queue: str
) -> None:
    archiver = await archive(aclient, store, queue)
    keys = aclient.keys(queue)

    @tasks.task
    async def work() -> None:
        return None

    handle = await aclient.enqueue(work)
    [first] = (await aclient.run(ops.claim(keys, 1, 60_000, "worker-that-died"))).jobs
    await aclient.transport.call("ZADD", keys.active, "XX", 1, handle.id)  # its lease ran out
    swept = await aclient.run(ops.sweep(keys, 3, KEEP))
    assert swept.recovered == [handle.id]
    [second] = (await aclient.run(ops.claim(keys, 1, 60_000, "worker-2"))).jobs
    assert await aclient.run(ops.complete(keys, KEEP, [(second.id, second.token, b"null")])) == [1]
    assert first.attempts == 1 and second.attempts == 2

    assert await archiver.drain() == 1
    record = await store.get(queue, handle.id)
    assert record is not None
    assert [(a.attempt, a.outcome, a.worker) for a in record.attempt_log] == [
        (1, AttemptOutcome.LOST, "worker-that-died"),
        (2, AttemptOutcome.COMPLETED, "worker-2"),
    ]
    assert record.worker == "worker-2"


async def test_a_full_hand_off_counts_what_it_drops_and_jobs_still_finish(
    aclient: AsyncClient,
    store: HistoryStore,
    tasks: Tasks,
    url: str,
    queue: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    keys = aclient.keys(queue)
    archiver = await archive(aclient, store, queue, max_jobs=10)
    await archiver.run_once()  # the archiver knows where the count of drops stood

    @tasks.task
    async def work(n: int) -> int:
        return n

    handles = await aclient.enqueue_many([work.call(n) for n in range(25)])
    await drain(tasks, url)
    assert all([(await h.fetch()).state is JobState.COMPLETED for h in handles])
    backlog = await aclient.run(handoff.backlog(keys))
    assert (backlog.jobs, backlog.dropped, backlog.max_jobs) == (10, 15, 10)
    with caplog.at_level(logging.ERROR, logger="conveyor.history"):
        assert await archiver.drain() == 10
    assert "15 finished jobs were not recorded" in caplog.text
    assert len(await records(store, queue)) == 10


async def test_entries_of_an_archiver_that_died_are_taken_over_and_stored_once(
    aclient: AsyncClient, store: HistoryStore, tasks: Tasks, url: str, queue: str
) -> None:
    keys = aclient.keys(queue)
    await archive(aclient, store, queue)

    @tasks.task
    async def work(n: int) -> int:
        return n

    await aclient.enqueue_many([work.call(n) for n in range(30)])
    await drain(tasks, url)
    # An archiver read the first entries and stored 5 of their jobs, then died before
    # acknowledging any.
    entries = await aclient.run(handoff.read_new(keys, "died", 1))
    read = [fields for entry in entries for fields in entry.jobs]
    assert read and sum(e.count for e in entries) == len(read)
    from conveyor.history.handoff import to_record

    await store.write([to_record(queue, fields) for fields in read[:5]])
    survivor = Archiver(aclient, store, {queue: keys}, claim_idle=0.05)
    assert await survivor.drain() == 30 - len(read)  # nobody read them; the dead one's are not idle yet
    await asyncio.sleep(0.1)
    assert await survivor.drain() == len(read)
    assert survivor.stats.claimed == len(read) and survivor.stats.duplicates == min(5, len(read))
    assert len(await records(store, queue)) == 30
    backlog = await aclient.run(handoff.backlog(keys))
    assert (backlog.jobs, backlog.entries, backlog.pending) == (0, 0, 0)


class FlakyStore:
    """A real store whose first writes fail, as a database that is down does."""

    def __init__(self, store: HistoryStore, failures: int) -> None:
        self.store = store
        self.failures = failures

    async def write(self, batch: Any) -> Any:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("the database is down")
        return await self.store.write(batch)


async def test_while_the_database_is_down_the_entries_wait_in_redis(
    aclient: AsyncClient, store: HistoryStore, tasks: Tasks, url: str, queue: str
) -> None:
    keys = aclient.keys(queue)

    @tasks.task
    async def work(n: int) -> int:
        return n

    down = FlakyStore(store, failures=3)
    archiver = Archiver(aclient, down, {queue: keys})  # type: ignore[arg-type]
    await archiver.enable()
    await aclient.enqueue_many([work.call(n) for n in range(20)])
    await drain(tasks, url)
    running = asyncio.create_task(archiver.run())
    try:
        # Before the database answers, everything is still in Redis, read but not acknowledged.
        await asyncio.sleep(0.3)
        backlog = await aclient.run(handoff.backlog(keys))
        assert backlog.jobs == 20 and backlog.pending == backlog.entries > 0
        for _ in range(100):
            if len(await records(store, queue)) == 20:
                break
            await asyncio.sleep(0.1)
    finally:
        archiver.closing.set()
        await running
    assert len(await records(store, queue)) == 20
    assert (await aclient.run(handoff.backlog(keys))).jobs == 0


async def test_an_entry_not_written_by_conveyor_is_logged_and_dropped_alone(
    aclient: AsyncClient,
    store: HistoryStore,
    tasks: Tasks,
    url: str,
    queue: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    keys = aclient.keys(queue)
    archiver = await archive(aclient, store, queue)

    @tasks.task
    async def work(text: str) -> str:
        return text

    await aclient.transport.call("XADD", keys.history, "*", "garbage", "\xff")
    bad_state = '["exploded", 1765000000000, false, ["n", "t"]]'
    await aclient.transport.call("XADD", keys.history, "*", "jobs", "2", "x", bad_state, "y", "not json")
    await aclient.enqueue(work, "nul \x00 and a long one " + "x" * 100_000)
    await drain(tasks, url)
    with caplog.at_level(logging.ERROR, logger="conveyor.history"):
        assert await archiver.drain() == 4
    assert archiver.stats.unreadable == 3 and "is not a finished job" in caplog.text
    [record] = (await records(store, queue)).values()
    assert "arguments" in record.truncated


async def test_retry_by_hand_starts_a_new_attempt_log(
    aclient: AsyncClient, store: HistoryStore, tasks: Tasks, url: str, queue: str
) -> None:
    archiver = await archive(aclient, store, queue)
    calls: list[int] = []

    @tasks.task(retries=1, backoff=Fixed(0))
    async def twice_bad() -> int:
        calls.append(1)
        if len(calls) <= 2:
            raise ValueError("bad")
        return len(calls)

    handle = await aclient.enqueue(twice_bad)
    await drain(tasks, url)
    assert await aclient.retry(queue, [handle.id]) == 1
    await drain(tasks, url)
    assert await archiver.drain() == 2
    page = await store.search(SearchQuery(id=handle.id, limit=10))
    assert sorted(r.state for r in page.items) == [FinalState.COMPLETED, FinalState.FAILED]
    latest = await store.get(queue, handle.id)
    assert latest is not None and latest.state is FinalState.COMPLETED
    assert [a.outcome for a in latest.attempt_log] == [AttemptOutcome.COMPLETED]
    assert json.loads(latest.result or "0") == 3
    assert timedelta(0) <= latest.finished_at - page.items[-1].finished_at


async def test_a_worker_with_a_history_url_archives_its_queues(
    aclient: AsyncClient, tasks: Tasks, url: str, queue: str, store_url: str, store: HistoryStore
) -> None:
    @tasks.task
    async def work(n: int) -> int:
        return n

    handles = await aclient.enqueue_many([work.call(n) for n in range(20)])
    worker = Worker(tasks, url=url, lease=5, history_url=store_url)
    serving = asyncio.create_task(worker.serve())
    try:
        for _ in range(200):
            if len(await records(store, queue)) == 20:
                break
            await asyncio.sleep(0.05)
    finally:
        worker.stop()
        await asyncio.wait_for(serving, 10)
    assert sorted(r.id for r in (await records(store, queue)).values()) == sorted(h.id for h in handles)
    backlog = await aclient.run(handoff.backlog(aclient.keys(queue)))
    assert backlog.enabled and backlog.jobs == 0


async def test_clients_read_the_history_sync_and_async(
    aclient: AsyncClient, tasks: Tasks, url: str, queue: str, store_url: str, store: HistoryStore
) -> None:
    archiver = await archive(aclient, store, queue)

    @tasks.task
    async def work(n: int) -> int:
        return n

    handle = await aclient.enqueue(work, 7)
    await drain(tasks, url)
    assert await archiver.drain() == 1
    async with AsyncClient.from_url(url, history_url=store_url) as reader:
        record = await (await reader.history()).get(queue, handle.id)
        assert record is not None and record.result == "7"

    def read_sync() -> None:
        with Client.from_url(url, history_url=store_url) as client:
            page = client.history.search(SearchQuery(queue=queue, states=["completed"]))
            assert [r.id for r in page.items] == [handle.id]
            assert client.history.get(queue, "no-such-job") is None
        with (
            Client.from_url(url, history_url=None) as client,
            pytest.raises(ConfigurationError, match="CONVEYOR_HISTORY_URL"),
        ):
            client.history  # noqa: B018 - the property is the call

    await asyncio.to_thread(read_sync)


async def test_a_burst_worker_stores_its_last_jobs_before_it_exits(
    aclient: AsyncClient, tasks: Tasks, url: str, queue: str, store_url: str, store: HistoryStore
) -> None:
    @tasks.task
    async def work(n: int) -> int:
        return n

    await aclient.enqueue_many([work.call(n) for n in range(300)])
    await drain(tasks, url, history_url=store_url)
    assert len(await records(store, queue)) == 300
    assert (await aclient.run(handoff.backlog(aclient.keys(queue)))).jobs == 0

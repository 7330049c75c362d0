"""The worker end to end, in this process's event loop, against the session's real server."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import threading
import time

import pytest

from conveyor import AsyncClient, Fixed, JobState, Retry, Tasks, Worker, WorkerSettings, chain, chord, ops
from conveyor.worker.phases import Phase, Phases
from conveyor.worker.settings import WorkerOptions

from helpers import running_worker, wait_until

pytestmark = pytest.mark.cluster_too  # also on a cluster in the default suite (conftest.py)

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


async def test_async_and_sync_tasks_complete(aclient: AsyncClient, tasks: Tasks, url: str) -> None:
    @tasks.task
    async def add(x: int, y: int) -> int:
        await asyncio.sleep(0.01)
        return x + y

    @tasks.task
    def thread_name() -> str:
        return threading.current_thread().name

    async with running_worker(tasks, url):
        a = await aclient.enqueue(add, 2, 3)
        b = await aclient.enqueue(thread_name)
        assert await a.result(timeout=5) == 5
        assert (await b.result(timeout=5)).startswith("conveyor-job")
    job = await a.fetch()
    assert job.state is JobState.COMPLETED and job.attempts == 1 and job.started_at and job.finished_at


async def test_context_variables_reach_sync_tasks(aclient: AsyncClient, tasks: Tasks, url: str) -> None:
    @tasks.task
    def read_var() -> str:
        return request_id.get()

    request_id.set("from-worker-context")
    async with running_worker(tasks, url):
        handle = await aclient.enqueue(read_var)
        assert await handle.result(timeout=5) == "from-worker-context"


async def test_retries_then_success(aclient: AsyncClient, tasks: Tasks, url: str) -> None:
    calls: list[int] = []

    @tasks.task(retries=3, backoff=Fixed(0))
    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("try again")
        return "ok"

    async with running_worker(tasks, url):
        handle = await aclient.enqueue(flaky)
        assert await handle.result(timeout=5) == "ok"
    job = await handle.fetch()
    assert job.attempts == 3 and len(calls) == 3
    assert job.error and job.error["type"] == "ConnectionError", "the last error stays visible"


async def test_out_of_retries_goes_to_dead_letter_with_traceback(
    aclient: AsyncClient, tasks: Tasks, url: str
) -> None:
    @tasks.task(retries=1, backoff=0)
    def broken(n: int) -> None:
        raise ValueError(f"bad input {n}")

    async with running_worker(tasks, url):
        handle = await aclient.enqueue(broken, 7)
        await wait_until(lambda: _state_is(aclient, tasks.default_queue, handle.id, JobState.FAILED))
    job = await handle.fetch()
    assert job.attempts == 2 and job.error is not None
    assert job.error["type"] == "ValueError" and job.error["message"] == "bad input 7"
    assert "raise ValueError" in job.error["traceback"]


async def _state_is(aclient: AsyncClient, queue: str, job_id: str, state: JobState) -> bool:
    return (await aclient.get_job(queue, job_id)).state is state


@pytest.mark.serial  # alone in make test (conftest.py): the retry's delay measured
async def test_retry_exception_sets_its_own_delay(aclient: AsyncClient, tasks: Tasks, url: str) -> None:
    seen: list[float] = []

    @tasks.task(retries=2)
    async def later() -> str:
        seen.append(time.monotonic())
        if len(seen) == 1:
            raise Retry(delay=0.3, reason="upstream busy")
        return "done"

    async with running_worker(tasks, url):
        handle = await aclient.enqueue(later)
        assert await handle.result(timeout=5) == "done"
    assert 0.25 < seen[1] - seen[0] < 2.0, "woke for the due retry, without a fixed poll"


async def test_unknown_task_and_bad_payload_are_dead_lettered_and_worker_goes_on(
    aclient: AsyncClient, tasks: Tasks, url: str, queue: str
) -> None:
    @tasks.task
    async def fine() -> str:
        return "fine"

    keys = aclient.keys(queue)
    bad = [
        ops.NewJob("unknown", "no_such_task", b"[]"),
        ops.NewJob("garbled", "fine", b"[not json"),
        ops.NewJob("wrong-shape", "fine", b'{"a": 1}'),
    ]
    await aclient.run(ops.enqueue(keys, bad))
    async with running_worker(tasks, url):
        good = await aclient.enqueue(fine)
        assert await good.result(timeout=5) == "fine"
        await wait_until(lambda: _count(aclient, queue, "failed", 3))
    unknown = await aclient.get_job(queue, "unknown")
    assert unknown.error and unknown.error["reason"] == "unknown_task" and unknown.attempts == 1
    assert "no task named 'no_such_task'" in unknown.error["message"]
    garbled = await aclient.get_job(queue, "garbled")
    assert garbled.error and garbled.error["reason"] == "bad_payload"


async def _count(aclient: AsyncClient, queue: str, state: str, n: int) -> bool:
    return (await aclient.counts(queue))[state] == n


async def test_async_timeout_cancels_the_task(aclient: AsyncClient, tasks: Tasks, url: str) -> None:
    cancelled = asyncio.Event()

    @tasks.task(timeout=0.2, retries=0)
    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with running_worker(tasks, url):
        handle = await aclient.enqueue(slow)
        await wait_until(lambda: _state_is(aclient, tasks.default_queue, handle.id, JobState.FAILED))
    assert cancelled.is_set()
    job = await handle.fetch()
    assert job.error and job.error["reason"] == "timeout" and "0.2 s" in job.error["message"]


async def test_sync_timeout_fails_the_job_and_discards_the_late_result(
    aclient: AsyncClient, tasks: Tasks, url: str
) -> None:
    finished = threading.Event()

    @tasks.task(timeout=0.2, retries=0)
    def stubborn() -> str:
        time.sleep(0.6)
        finished.set()
        return "too late"

    async with running_worker(tasks, url):
        handle = await aclient.enqueue(stubborn)
        await wait_until(lambda: _state_is(aclient, tasks.default_queue, handle.id, JobState.FAILED))
        await asyncio.to_thread(finished.wait, 5)
        await asyncio.sleep(0.1)
    job = await handle.fetch()
    assert job.state is JobState.FAILED and job.result is None and job.error["reason"] == "timeout"  # type: ignore[index]


@pytest.mark.serial  # alone in make test (conftest.py): the stop timed
async def test_graceful_stop_hands_unfinished_jobs_back_at_once(
    aclient: AsyncClient, tasks: Tasks, url: str, queue: str
) -> None:
    started = asyncio.Event()

    @tasks.task
    async def long() -> None:
        started.set()
        await asyncio.sleep(60)

    worker = Worker(tasks, url=url, shutdown_grace=0.2, lease=30)
    serving = asyncio.create_task(worker.serve())
    handle = await aclient.enqueue(long)
    await asyncio.wait_for(started.wait(), 5)
    begin = time.monotonic()
    worker.stop()
    await asyncio.wait_for(serving, 5)
    assert time.monotonic() - begin < 2
    job = await handle.fetch()
    assert job.state is JobState.WAITING, "back in waiting at once, not after the 30 s lease"
    assert job.attempts == 0
    assert (await aclient.counts(queue))["active"] == 0


@pytest.mark.serial  # alone in make test (conftest.py): the delay measured
async def test_delayed_job_runs_when_due(aclient: AsyncClient, tasks: Tasks, url: str) -> None:
    ran_at: list[float] = []

    @tasks.task
    async def tick() -> None:
        ran_at.append(time.monotonic())

    async with running_worker(tasks, url, sweep_interval=30):
        await asyncio.sleep(0.1)  # the worker is idle and blocked in Redis
        sent = time.monotonic()
        await aclient.enqueue(tick.with_options(delay=0.4))
        await wait_until(lambda: bool(ran_at), timeout=5)
    assert 0.35 < ran_at[0] - sent < 1.5


@pytest.mark.serial  # alone in make test (conftest.py): the pick-up timed
async def test_idle_worker_picks_up_new_job_promptly(aclient: AsyncClient, tasks: Tasks, url: str) -> None:
    ran_at: list[float] = []

    @tasks.task
    async def tick() -> None:
        ran_at.append(time.monotonic())

    async with running_worker(tasks, url, sweep_interval=30):
        await asyncio.sleep(0.2)
        sent = time.monotonic()
        await aclient.enqueue(tick)
        await wait_until(lambda: bool(ran_at), timeout=5)
    assert ran_at[0] - sent < 1.0, "blocked in Redis, not sleeping on a poll interval"


async def test_queues_are_served_in_strict_priority_order(aclient: AsyncClient, url: str, queue: str) -> None:
    tasks = Tasks(queue=queue + "-low")
    order: list[str] = []

    @tasks.task
    async def record(tag: str) -> None:
        order.append(tag)

    high = record.with_options(queue=queue + "-high")
    await aclient.enqueue_many([record.call("low") for _ in range(5)])
    await aclient.enqueue_many([high.call("high") for _ in range(5)])
    async with running_worker(tasks, url, queues=[queue + "-high", queue + "-low"], concurrency=1):
        await wait_until(lambda: len(order) == 10)
    assert order == ["high"] * 5 + ["low"] * 5


async def test_burst_mode_drains_then_exits(aclient: AsyncClient, tasks: Tasks, url: str, queue: str) -> None:
    @tasks.task
    async def noop() -> None: ...

    await aclient.enqueue_many([noop.call() for _ in range(2000)])
    worker = Worker(tasks, url=url, burst=True, concurrency=50)
    await asyncio.wait_for(worker.serve(), 30)
    assert worker.processed == 2000
    counts = await aclient.counts(queue)
    assert counts["completed"] == 2000 and counts["waiting"] == 0 and counts["active"] == 0


async def test_burst_mode_waits_for_work_its_own_outcomes_make(
    aclient: AsyncClient, tasks: Tasks, url: str, queue: str
) -> None:
    """A retry due at once and the parents of flows become work only when the outcomes
    before them are written: one burst run drains them too (it used to exit first)."""
    tries: list[int] = []

    @tasks.task
    async def add(x: int, y: int = 0) -> int:
        return x + y

    @tasks.task
    async def total(values: list[int]) -> int:
        return sum(values)

    @tasks.task(retries=2, backoff=Fixed(0))
    async def flaky() -> str:
        tries.append(1)
        if len(tries) == 1:
            raise ConnectionError("once")
        return "ok"

    chord_ = await aclient.enqueue_flow(chord([add.call(1), add.call(2)], total.call()))
    chain_ = await aclient.enqueue_flow(chain(add.call(1), add.call(y=10), add.call(y=100)))
    retried = await aclient.enqueue(flaky)
    await asyncio.wait_for(Worker(tasks, url=url, burst=True).serve(), 15)
    assert await chord_.job.result(timeout=0.1) == 3
    assert await chain_.job.result(timeout=0.1) == 111
    assert await retried.result(timeout=0.1) == "ok"


async def test_unserialisable_result_fails_the_job_clearly(
    aclient: AsyncClient, tasks: Tasks, url: str
) -> None:
    @tasks.task
    async def returns_object() -> object:
        return object()

    async with running_worker(tasks, url):
        handle = await aclient.enqueue(returns_object)
        await wait_until(lambda: _state_is(aclient, tasks.default_queue, handle.id, JobState.FAILED))
    job = await handle.fetch()
    assert (
        job.error
        and job.error["reason"] == "bad_result"
        and "cannot be encoded as JSON" in job.error["message"]
    )


async def test_worker_registry_lists_live_workers(aclient: AsyncClient, tasks: Tasks, url: str) -> None:
    @tasks.task
    async def noop() -> None: ...

    async with running_worker(tasks, url) as worker:
        # It registers as it starts, soon after running_worker returns.
        await wait_until(lambda: _listed(aclient, worker.id))
    assert worker.id not in [w["id"] for w in await aclient.workers()]


async def _listed(aclient: AsyncClient, worker_id: str) -> bool:
    return worker_id in [w["id"] for w in await aclient.workers()]


async def test_warns_when_redis_may_evict_jobs(
    aclient: AsyncClient, tasks: Tasks, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    @tasks.task
    async def noop() -> None: ...

    # On a cluster: on every primary (redis-py routes CONFIG to one node, then to none).
    await aclient.transport.call_on_primaries("CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
    try:
        async with running_worker(tasks, url):
            # Until the check ran (a stop while the worker starts would cut it short).
            await wait_until(
                lambda: any("maxmemory-policy is 'allkeys-lru'" in r.getMessage() for r in caplog.records)
            )
    finally:
        await aclient.transport.call_on_primaries("CONFIG", "SET", "maxmemory-policy", "noeviction")


async def test_startup_and_shutdown_functions_run_around_the_jobs(
    aclient: AsyncClient, tasks: Tasks, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Startup functions run, in order, before the first job; shutdown functions after the
    last one, in reverse order, even when one of them raises."""
    calls: list[str] = []

    @tasks.on_startup
    async def open_pool() -> None:
        calls.append("open pool")

    tasks.on_startup(lambda: calls.append("open cache"))

    @tasks.on_shutdown
    def close_pool() -> None:
        calls.append("close pool")

    @tasks.on_shutdown
    async def close_cache() -> None:
        calls.append("close cache")
        raise RuntimeError("cache already gone")

    @tasks.task
    def job(n: int) -> None:
        calls.append(f"job {n}")

    handles = [await aclient.enqueue(job, n) for n in range(2)]
    await asyncio.wait_for(Worker(tasks, url=url, burst=True, lease=2.0).serve(), 15)
    assert calls[:2] == ["open pool", "open cache"]
    assert sorted(calls[2:4]) == ["job 0", "job 1"]  # in threads: either may finish first
    assert calls[4:] == ["close cache", "close pool"]
    assert [(await h.fetch()).state for h in handles] == [JobState.COMPLETED] * 2
    assert "<locals>.close_cache failed" in caplog.text
    assert "cache already gone" in caplog.text


async def test_a_failing_startup_function_stops_the_worker_before_it_claims(
    aclient: AsyncClient, tasks: Tasks, url: str, queue: str
) -> None:
    @tasks.on_startup
    def no_database() -> None:
        raise ConnectionRefusedError("database at 127.0.0.1:1 refused")

    @tasks.task
    def job() -> None: ...

    handle = await aclient.enqueue(job)
    with pytest.raises(ConnectionRefusedError, match="database"):
        await asyncio.wait_for(Worker(tasks, url=url, burst=True).serve(), 15)
    assert (await handle.fetch()).state is JobState.WAITING
    # Not registered either (workers of other tests, on other queues, may be listed).
    assert [w for w in await aclient.workers() if queue in w["queues"].split(",")] == []


def test_worker_options_are_the_fields_of_worker_settings() -> None:
    assert WorkerOptions.__optional_keys__ == {f.name for f in dataclasses.fields(WorkerSettings)}


def test_a_keyword_option_overrides_worker_settings_and_an_unknown_one_is_refused() -> None:
    tasks = Tasks()
    base = WorkerSettings(concurrency=7, threads=4, lease=3.0)
    worker = Worker(tasks, url="redis://localhost:1/0", worker_settings=base, lease=5.0, threads=None)
    assert worker.config == WorkerSettings(concurrency=7, threads=None, lease=5.0)
    assert Worker(tasks, url="redis://localhost:1/0").config == WorkerSettings()
    with pytest.raises(TypeError, match="bogus"):
        Worker(tasks, url="redis://localhost:1/0", bogus=1)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="concurrency"):
        Worker(tasks, url="redis://localhost:1/0", concurrency=0)


def test_phases_only_move_forward() -> None:
    phases = Phases()
    assert phases.current is Phase.STARTING and phases.reached(Phase.STARTING).is_set()
    phases.advance(Phase.DRAINING)  # stop() while starting
    phases.advance(Phase.RUNNING)  # the loops start: the stop is not undone
    assert phases.current is Phase.DRAINING
    assert phases.reached(Phase.RUNNING).is_set() and phases.reached(Phase.DRAINING).is_set()
    assert not phases.reached(Phase.STOPPING).is_set()


async def test_a_stop_while_starting_stops_the_worker_before_it_claims(
    aclient: AsyncClient, tasks: Tasks, url: str
) -> None:
    @tasks.task
    def job() -> None: ...

    handle = await aclient.enqueue(job)
    worker = Worker(tasks, url=url)
    tasks.on_startup(worker.stop)
    await asyncio.wait_for(worker.serve(), 15)
    assert (await handle.fetch()).state is JobState.WAITING

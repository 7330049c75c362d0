"""Flow control and job control: pause, limits across workers, time to live, cancel and abort,
progress and logs, retry-after without spending an attempt."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from conveyor import (
    AsyncClient,
    Client,
    InvalidState,
    JobCancelled,
    JobFailed,
    JobState,
    RetryAfter,
    Tasks,
    current_job,
)

from helpers import running_worker, wait_until

pytestmark = pytest.mark.cluster_too  # also on a cluster in the default suite (conftest.py)


async def state_of(aclient: AsyncClient, queue: str, job_id: str) -> JobState:
    return (await aclient.get_job(queue, job_id)).state


async def test_pause_stops_claiming_and_resume_picks_up(
    aclient: AsyncClient, tasks: Tasks, url: str, queue: str
) -> None:
    ran: list[int] = []

    @tasks.task
    async def work(n: int) -> None:
        ran.append(n)

    await aclient.pause(queue)
    async with running_worker(tasks, url):
        handles = await aclient.enqueue_many([work.call(i) for i in range(5)])
        await asyncio.sleep(0.5)
        assert ran == [] and (await aclient.counts(queue))["waiting"] == 5, "paused: jobs arrive, none start"
        await aclient.resume(queue)
        await handles[-1].result(timeout=5)
        await wait_until(lambda: len(ran) == 5, timeout=5)


async def test_concurrency_limit_holds_across_workers(
    aclient: AsyncClient, tasks: Tasks, url: str, queue: str
) -> None:
    running = 0
    peak = 0

    @tasks.task
    async def hold() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1

    await aclient.set_limits(queue, concurrency=2)
    assert await aclient.settings_of(queue) == {"concurrency": 2}
    async with (
        running_worker(tasks, url, concurrency=10),
        running_worker(tasks, url, concurrency=10),
        running_worker(tasks, url, concurrency=10),
    ):
        handles = await aclient.enqueue_many([hold.call() for _ in range(30)])
        for handle in handles:
            await handle.result(timeout=20)
    assert peak == 2, f"at most 2 jobs ran at once across 3 workers, saw {peak}"


async def test_rate_limit_is_enforced_at_claim_time(
    aclient: AsyncClient, tasks: Tasks, url: str, queue: str
) -> None:
    starts: list[float] = []

    @tasks.task
    async def tick() -> None:
        starts.append(time.monotonic())

    await aclient.set_limits(queue, rate=(5, 1.0))
    async with running_worker(tasks, url), running_worker(tasks, url), running_worker(tasks, url):
        handles = await aclient.enqueue_many([tick.call() for _ in range(15)])
        for handle in handles:
            await handle.result(timeout=10)
    starts.sort()
    assert starts[-1] - starts[0] > 1.5, "15 jobs at 5 per second need three windows"
    for i in range(len(starts) - 5):
        assert starts[i + 5] - starts[i] > 0.5, "no 6 starts within one window"
    await aclient.set_limits(queue, rate=None)
    assert await aclient.settings_of(queue) == {}


async def test_job_not_started_within_its_ttl_expires(
    aclient: AsyncClient, tasks: Tasks, url: str, queue: str
) -> None:
    @tasks.task
    async def late() -> None: ...

    await aclient.pause(queue)
    handle = await aclient.enqueue(late.with_options(ttl=0.2))
    fresh = await aclient.enqueue(late.with_options(ttl=60))
    await asyncio.sleep(0.3)
    await aclient.resume(queue)
    async with running_worker(tasks, url):
        await fresh.result(timeout=5)
        await wait_until(lambda: _is(aclient, queue, handle.id, JobState.FAILED))
    job = await handle.fetch()
    assert job.error and job.error["reason"] == "expired" and job.attempts == 0


async def _is(aclient: AsyncClient, queue: str, job_id: str, state: JobState) -> bool:
    return await state_of(aclient, queue, job_id) is state


async def test_cancel_waiting_and_delayed_jobs(aclient: AsyncClient, tasks: Tasks, queue: str) -> None:
    @tasks.task
    async def noop() -> None: ...

    waiting = await aclient.enqueue(noop)
    delayed = await aclient.enqueue(noop.with_options(delay=60))
    assert await aclient.cancel(queue, waiting.id, reason="changed my mind", by="tester") == "cancelled"
    assert await aclient.cancel(queue, delayed.id) == "cancelled"
    job = await waiting.fetch()
    assert job.state is JobState.CANCELLED and job.error
    assert job.error["by"] == "tester" and job.error["message"] == "changed my mind"
    with pytest.raises(JobCancelled, match="cancelled by tester: changed my mind"):
        await waiting.result(timeout=1)
    counts = await aclient.counts(queue)
    assert counts["cancelled"] == 2 and counts["waiting"] == 0 and counts["delayed"] == 0
    with pytest.raises(InvalidState, match="already cancelled"):
        await aclient.cancel(queue, waiting.id)


async def test_abort_a_running_async_job(aclient: AsyncClient, tasks: Tasks, url: str, queue: str) -> None:
    started = asyncio.Event()
    saw_cancel = asyncio.Event()

    @tasks.task
    async def endless() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            saw_cancel.set()
            raise

    async with running_worker(tasks, url, lease=1.5):
        handle = await aclient.enqueue(endless)
        await asyncio.wait_for(started.wait(), 5)
        assert await aclient.cancel(queue, handle.id, reason="customer left", by="support") == "aborting"
        with pytest.raises(JobCancelled, match="customer left"):
            await handle.result(timeout=5)
    assert saw_cancel.is_set()
    job = await handle.fetch()
    assert job.state is JobState.CANCELLED
    assert job.error is not None and (job.error["by"], job.error["message"]) == ("support", "customer left")


async def test_abort_a_running_sync_job_through_its_flag(
    aclient: AsyncClient, tasks: Tasks, url: str, queue: str
) -> None:
    started = threading.Event()

    @tasks.task
    def polite() -> str:
        started.set()
        job = current_job()
        for _ in range(500):
            job.raise_if_cancelled()
            time.sleep(0.01)
        return "finished"

    async with running_worker(tasks, url, lease=1.5):
        handle = await aclient.enqueue(polite)
        await asyncio.to_thread(started.wait, 5)
        await aclient.cancel(queue, handle.id)
        with pytest.raises(JobCancelled):
            await handle.result(timeout=5)


async def test_progress_and_logs_are_visible_while_running(
    aclient: AsyncClient, tasks: Tasks, url: str, queue: str
) -> None:
    proceed = asyncio.Event()

    @tasks.task
    async def report() -> str:
        job = current_job()
        job.progress({"done": 1, "of": 2})
        job.log("first half done")
        await proceed.wait()
        job.progress(100)
        job.log("all done")
        return "ok"

    @tasks.task
    def report_sync() -> None:
        current_job().progress(0.5)
        current_job().log("from a thread")

    async with running_worker(tasks, url):
        handle = await aclient.enqueue(report)
        await wait_until(lambda: _progress_is(aclient, queue, handle.id, {"done": 1, "of": 2}))
        assert await aclient.job_logs(queue, handle.id) == ["first half done"]
        proceed.set()
        assert await handle.result(timeout=5) == "ok"
        other = await aclient.enqueue(report_sync)
        await other.result(timeout=5)
    assert (await handle.fetch()).progress == 100
    assert await aclient.job_logs(queue, handle.id) == ["first half done", "all done"]
    assert (await other.fetch()).progress == 0.5
    assert await aclient.job_logs(queue, other.id) == ["from a thread"]


async def _progress_is(aclient: AsyncClient, queue: str, job_id: str, value: object) -> bool:
    return (await aclient.get_job(queue, job_id)).progress == value


async def test_a_range_of_a_job_log(
    client: Client, aclient: AsyncClient, tasks: Tasks, url: str, queue: str
) -> None:
    """Lines ``start`` to ``end`` of a log, both included, negative ones from the newest (the
    API returns a job with its last 100), on both faces."""

    @tasks.task
    async def chatty() -> None:
        for i in range(5):
            current_job().log(f"line {i}")

    async with running_worker(tasks, url):
        handle = await aclient.enqueue(chatty)
        await handle.result(timeout=5)
    assert await aclient.job_logs(queue, handle.id, -2, -1) == ["line 3", "line 4"]
    assert client.job_logs(queue, handle.id, start=1, end=2) == ["line 1", "line 2"]
    assert client.job_logs(queue, handle.id) == [f"line {i}" for i in range(5)]


def test_current_job_outside_a_job_says_so() -> None:
    with pytest.raises(LookupError, match="only available inside a task"):
        current_job()


async def test_retry_after_does_not_spend_attempts(aclient: AsyncClient, tasks: Tasks, url: str) -> None:
    calls = 0

    @tasks.task(retries=0)
    async def polite_client() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise RetryAfter(0.05, "429 Too Many Requests")
        return "served"

    async with running_worker(tasks, url):
        handle = await aclient.enqueue(polite_client)
        assert await handle.result(timeout=5) == "served"
    assert calls == 3 and (await handle.fetch()).attempts == 1, "two come-back-later answers cost nothing"


async def test_a_job_cannot_be_deferred_forever(aclient: AsyncClient, tasks: Tasks, url: str) -> None:
    calls = 0

    @tasks.task(retries=5, max_deferrals=3)
    async def always_busy() -> None:
        nonlocal calls
        calls += 1
        raise RetryAfter(0, "429 Too Many Requests")

    async with running_worker(tasks, url):
        handle = await aclient.enqueue(always_busy)
        with pytest.raises(JobFailed):
            await handle.result(timeout=5)
    job = await handle.fetch()
    assert calls == 4, "three deferrals allowed, the fourth ask fails it"
    assert job.state is JobState.FAILED and job.deferrals == 4
    assert job.attempts == 1, "the deferrals cost no attempt; the last one, failed, does"
    assert job.error is not None and job.error["reason"] == "max_deferrals"
    assert job.error["type"] == "TooManyDeferrals" and "429 Too Many Requests" in job.error["message"]


def test_max_deferrals_must_be_a_count() -> None:
    with pytest.raises(ValueError, match="max_deferrals must be a non-negative integer"):
        Tasks().task(max_deferrals=-1)(lambda: None)

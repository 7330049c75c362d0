"""A Redis outage longer than the lease, while a live worker runs a job (issue 20).

The defect: after such an outage the sweep re-delivered the job the worker was still running,
the same worker claimed it again, and since the worker kept its held jobs by job id, the old
attempt's end cleared the new attempt's bookkeeping: no renewals, the lease ran out again, and
after three rounds the job was dead-lettered "worker lost 3 times" with the worker alive and
every attempt run to the end. Now the sweep gives leases that ran out while nobody could sweep
a lease's time for their workers to renew them, and a worker keeps its held jobs by attempt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from conveyor import AsyncClient, JobState, Tasks, current_job, ops

from helpers import running_worker, wait_until

pytestmark = pytest.mark.serial  # alone in make test (conftest.py): an outage timed against the lease

LEASE = 3.0
SWEEP = 0.25


class _HeartbeatFailures(logging.Handler):
    """When the worker's heartbeat last failed to reach Redis (monotonic seconds)."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("heartbeat failed"):
            self.times.append(time.monotonic())


async def test_outage_longer_than_the_lease_does_not_dead_letter_a_running_job(
    server_factory: Any, queue: str
) -> None:
    server = server_factory(appendfsync="always")
    tasks = Tasks(queue=queue)
    runs: list[float] = []

    @tasks.task
    async def long_job() -> str:
        runs.append(time.monotonic())
        await asyncio.sleep(2 * LEASE)
        return "done"

    failures = _HeartbeatFailures()
    logging.getLogger("conveyor.worker").addHandler(failures)
    try:
        async with running_worker(tasks, server.url, lease=LEASE, sweep_interval=SWEEP, concurrency=4):
            async with AsyncClient.from_url(server.url) as client:
                handle = await client.enqueue(long_job)
                await wait_until(lambda: bool(runs), timeout=5)
            await asyncio.sleep(0.3)
            await asyncio.to_thread(server.kill)
            down = time.monotonic()
            # Stay down past the lease, then come back just after a failed beat: the next beat
            # is a third of a lease away, so the sweep (every 0.25 s) reaches Redis first --
            # the order in which the defect showed.
            while True:
                await asyncio.sleep(0.02)
                now = time.monotonic()
                if now - down > LEASE + 1 and failures.times and down < failures.times[-1] > now - 0.1:
                    break
            await asyncio.to_thread(server.start)
            async with AsyncClient.from_url(server.url) as client:
                job = await _finished(client, queue, handle.id, timeout=6 * LEASE)
    finally:
        logging.getLogger("conveyor.worker").removeHandler(failures)
    assert job.state is JobState.COMPLETED, (job.state, job.error)
    assert job.crashes == 0, "an outage is not a lost worker"
    assert job.attempts == 1 and len(runs) == 1, "the running attempt kept its lease"


async def _finished(client: AsyncClient, queue: str, job_id: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        job = await client.get_job(queue, job_id)
        if job is not None and job.state in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED):
            return job
        if time.monotonic() > deadline:
            pytest.fail(f"job not finished after {timeout} s: {job}")
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_a_worker_handed_a_job_it_still_runs_fences_the_old_attempt(
    url: str, queue: str, kind: str
) -> None:
    """The sweep re-delivers a job whose lease ran out while its worker lived (here: the lease
    is made to run out), and the same worker claims it again. The old attempt is stopped at
    once -- cancelled if async, told through ``current_job().cancelled`` if sync -- and records
    nothing; the new attempt keeps its lease renewed (it runs for two leases) and completes."""
    tasks = Tasks(queue=queue)
    started: list[tuple[int, float]] = []
    stopped: list[tuple[int, float]] = []

    if kind == "async":

        @tasks.task
        async def long_job() -> int:
            attempt = current_job().attempt
            started.append((attempt, time.monotonic()))
            try:
                await asyncio.sleep(2 * LEASE)
            except asyncio.CancelledError:
                stopped.append((attempt, time.monotonic()))
                raise
            return attempt

    else:

        @tasks.task
        def long_job() -> int:
            attempt = current_job().attempt
            started.append((attempt, time.monotonic()))
            deadline = time.monotonic() + 2 * LEASE
            while time.monotonic() < deadline:
                if current_job().cancelled:
                    stopped.append((attempt, time.monotonic()))
                    return -1
                time.sleep(0.01)
            return attempt

    async with (
        running_worker(tasks, url, lease=LEASE, sweep_interval=60, concurrency=4),
        AsyncClient.from_url(url) as client,
    ):
        keys = client.keys(queue)
        handle = await client.enqueue(long_job)
        await wait_until(lambda: bool(started), timeout=5)
        # The lease runs out (as after a stall), and a sweep re-delivers the job at once.
        await client.transport.call("ZADD", keys.active, "XX", 1, handle.id)
        swept = await client.run(ops.sweep(keys, 3, ops.Retention(-1, -1), lease_ms=int(LEASE * 1000)))
        assert swept.recovered == [handle.id]
        assert await handle.result(timeout=4 * LEASE) == 2
        job = await client.get_job(queue, handle.id)
    assert [attempt for attempt, _ in started] == [1, 2]
    assert [attempt for attempt, _ in stopped] == [1], "the old attempt was stopped"
    fenced_after = stopped[0][1] - started[1][1]
    assert fenced_after < 0.5, f"the old attempt ran on for {fenced_after:.2f} s"
    assert job.attempts == 2 and job.crashes == 1  # from Redis' side, the lease was lost

"""isolation="process": jobs in child processes, killed at their timeout or on abort."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conveyor import AsyncClient, JobCancelled, JobFailed, Tasks

from apps.isolated import async_square, explode, hang, square, tasks, vanish
from helpers import running_worker, wait_until


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_jobs_run_in_their_own_process(aclient: AsyncClient, url: str, queue: str) -> None:
    async with running_worker(tasks, url, queues=[queue]):
        first = await aclient.enqueue(square.with_options(queue=queue), 7)
        second = await aclient.enqueue(square.with_options(queue=queue), 8)
        third = await aclient.enqueue(async_square.with_options(queue=queue), 9)
        one, two = await first.result(timeout=20), await second.result(timeout=20)
        assert await third.result(timeout=20) == 81
    assert (one["square"], two["square"]) == (49, 64)
    assert os.getpid() not in (one["pid"], two["pid"]) and one["pid"] != two["pid"]


async def test_a_hanging_job_is_killed_at_its_timeout(
    aclient: AsyncClient, url: str, queue: str, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    async with running_worker(tasks, url, queues=[queue]):
        # A timeout the child outlives to start and write its pid even on a busy machine
        # (with the task's 1 s, a loaded run killed it before it wrote the file).
        handle = await aclient.enqueue(hang.with_options(queue=queue, timeout=4), str(pid_file))
        with pytest.raises(JobFailed, match="TimeoutError"):
            await handle.result(timeout=20)
        pid = int(pid_file.read_text())
        await wait_until(lambda: not _alive(pid), timeout=5)
        # the worker is fine and goes on
        assert (await (await aclient.enqueue(square.with_options(queue=queue), 2)).result(timeout=20))[
            "square"
        ] == 4


async def test_abort_kills_the_process(aclient: AsyncClient, url: str, queue: str, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    async with running_worker(tasks, url, queues=[queue]):
        handle = await aclient.enqueue(hang.with_options(queue=queue, timeout=60), str(pid_file))
        await wait_until(pid_file.exists, timeout=20)
        pid = int(pid_file.read_text())
        assert await aclient.cancel(queue, handle.id) == "aborting"
        with pytest.raises(JobCancelled):
            await handle.result(timeout=20)
        await wait_until(lambda: not _alive(pid), timeout=5)


async def test_errors_and_a_dying_process_are_reported(aclient: AsyncClient, url: str, queue: str) -> None:
    async with running_worker(tasks, url, queues=[queue]):
        raised = await aclient.enqueue(explode.with_options(queue=queue))
        died = await aclient.enqueue(vanish.with_options(queue=queue))
        with pytest.raises(JobFailed, match="KeyError"):
            await raised.result(timeout=20)
        with pytest.raises(JobFailed, match="exit code 7"):
            await died.result(timeout=20)
    error = (await raised.fetch()).error
    assert error is not None and "missing thing" in error["message"]


def test_a_task_that_cannot_be_found_by_name_is_refused_at_registration() -> None:
    local = Tasks()
    with pytest.raises(ValueError, match="module level"):

        @local.task(isolation="process")
        def nested() -> None: ...

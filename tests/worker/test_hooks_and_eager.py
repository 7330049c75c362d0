"""Worker hooks around every job, and the eager client for users' unit tests."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor import (
    AsyncClient,
    Fail,
    Fixed,
    Flow,
    JobFailed,
    JobState,
    SerializationError,
    Tasks,
    chain,
    chord,
    current_job,
)
from conveyor.hooks import Hooks
from conveyor.testing import EagerClient

from helpers import running_worker, wait_until


class Recorder(Hooks):
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    def before_job(self, job: Any) -> None:
        self.calls.append(("before", job.task, job.attempt))

    def after_job(self, job: Any, result: Any) -> None:
        self.calls.append(("after", job.task, result))

    def on_retry(self, job: Any, error: BaseException, delay: float) -> None:
        self.calls.append(("retry", job.task, delay))

    def on_failure(self, job: Any, error: BaseException) -> None:
        self.calls.append(("failure", job.task, str(error)))


class Broken(Hooks):
    def before_job(self, job: Any) -> None:
        raise RuntimeError("hook bug")


async def test_hooks_see_every_job_event(aclient: AsyncClient, tasks: Tasks, url: str, queue: str) -> None:
    attempts = 0

    @tasks.task(retries=1, backoff=Fixed(0))
    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ValueError("once")
        return "ok"

    @tasks.task(retries=0)
    def doomed() -> None:
        raise KeyError("never")

    recorder = Recorder()
    async with running_worker(tasks, url, hooks=[recorder, Broken()]):
        assert await (await aclient.enqueue(flaky)).result(timeout=5) == "ok"
        bad = await aclient.enqueue(doomed)
        await wait_until(lambda: _failed(aclient, queue, bad.id))
    assert recorder.calls[:4] == [
        ("before", "flaky", 1),
        ("retry", "flaky", 0.0),
        ("before", "flaky", 2),
        ("after", "flaky", "ok"),
    ]
    assert recorder.calls[4:] == [("before", "doomed", 1), ("failure", "doomed", "'never'")]


async def _failed(aclient: AsyncClient, queue: str, job_id: str) -> bool:
    return (await aclient.get_job(queue, job_id)).state is JobState.FAILED


def test_eager_client_runs_tasks_at_enqueue() -> None:
    tasks = Tasks()
    calls = 0

    @tasks.task
    async def add(x: int, y: int) -> int:
        current_job().progress(50)
        current_job().log("adding")
        return x + y

    @tasks.task(retries=2)
    def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("again")
        return "done"

    @tasks.task(retries=0)
    def broken() -> None:
        raise ValueError("nope")

    client = EagerClient(tasks)
    handle = client.enqueue(add, 2, 3)
    assert handle.result() == 5 and handle.created
    assert client.jobs[0].progress == 50 and client.jobs[0].logs == ["adding"]
    assert client.enqueue(flaky).result() == "done" and client.jobs[1].attempts == 3
    with pytest.raises(JobFailed, match="nope"):
        client.enqueue(broken).result()
    assert not client.enqueue(add.with_options(job_id=handle.id), 1, 1).created
    with pytest.raises(SerializationError):
        client.enqueue(add, object(), 1)  # type: ignore[arg-type]
    assert [job.state for job in client.jobs] == [JobState.COMPLETED, JobState.COMPLETED, JobState.FAILED]


def test_eager_client_fails_a_job_that_raises_fail_at_once_and_passes_a_chord_a_list() -> None:
    tasks = Tasks()

    @tasks.task(retries=3)
    def refuse() -> None:
        raise Fail("cannot ever work")

    @tasks.task
    def square(n: int) -> int:
        return n * n

    @tasks.task
    def describe(results: list[int]) -> str:
        return repr(results)

    client = EagerClient(tasks)
    with pytest.raises(JobFailed, match="cannot ever work"):
        client.enqueue(refuse).result()
    assert client.jobs[0].attempts == 1, "as a worker does: Fail is not retried"
    assert client.enqueue_flow(chord([square.call(3)], describe.call())).job.result() == "[9]"


def test_eager_client_runs_flows_children_first() -> None:
    tasks = Tasks()

    @tasks.task
    def square(n: int) -> int:
        return n * n

    @tasks.task
    def total(results: list[int]) -> int:
        return sum(results)

    @tasks.task
    def count() -> int:
        return len(current_job().children)

    @tasks.task(retries=0)
    def broken() -> None:
        raise ValueError("nope")

    client = EagerClient(tasks)
    assert client.enqueue_flow(chord([square.call(n) for n in range(4)], total.call())).job.result() == 14
    assert client.enqueue_flow(chain(square.call(3), square.call())).job.result() == 81
    assert client.enqueue_flow(Flow(count.call(), [square.call(1), square.call(2)])).job.result() == 2
    failing = client.enqueue_flow(Flow(count.call(), [broken.call()]))
    with pytest.raises(JobFailed):
        failing.job.result()
    lenient = client.enqueue_flow(Flow(count.call(), [broken.call()], on_child_failure="ignore"))
    assert lenient.job.result() == 1

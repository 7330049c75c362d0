"""Testing helpers for users: run tasks in-process, at enqueue, without Redis or a worker.

::

    from conveyor.testing import EagerClient

    def test_signup_sends_a_welcome_mail():
        client = EagerClient(tasks)
        signup(client, "ada@example.com")       # code under test calls client.enqueue(...)
        [job] = client.jobs
        assert job.task == "send_welcome" and job.result == "sent"

When to use it: unit tests of code that *enqueues* — what was enqueued, with which
arguments and options, and what the task returned. The task runs at once, in the calling
thread (async tasks in a private event loop), retries run back to back without their
delays, and ``current_job()`` works inside the task (progress and log lines are kept on the
eager job).

When not to: anything about delivery — delays, priorities, leases, limits, schedules,
concurrency, crashes. Those live in Redis and its scripts; test them against a real server
(``conveyor.dev.server.RedisServer`` starts a private one in a second).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Generic

from . import serialization
from .context import JobContext, _current
from .errors import Fail, JobCancelled, JobFailed, RetryAfter
from .flows import ChildOutcome, Flow, FlowHandle
from .job import EnqueueOutcome, JobState
from .ops.ids import new_job_id
from .task import P, R, Task, TaskCall, Tasks


@dataclass
class EagerJob:
    """What an eager enqueue did."""

    id: str
    task: str
    queue: str
    args: list[Any]
    kwargs: dict[str, Any]
    state: JobState = JobState.WAITING
    attempts: int = 0
    result: Any = None
    error: BaseException | None = None
    progress: Any = None
    logs: list[str] = field(default_factory=list)


class EagerHandle(Generic[R]):
    def __init__(self, job: EagerJob, outcome: EnqueueOutcome) -> None:
        self.job = job
        self.id = job.id
        self.queue = job.queue
        self.outcome = outcome

    @property
    def created(self) -> bool:
        return self.outcome is EnqueueOutcome.CREATED

    def result(self, timeout: float | None = None) -> R:
        """The task's return value; raises ``JobFailed`` as the real client would."""
        if self.job.state is JobState.FAILED:
            error = self.job.error
            raise JobFailed(self.id, {"type": type(error).__name__, "message": str(error)})
        if self.job.state is JobState.CANCELLED:
            raise JobCancelled(self.id, {"by": "eager", "message": "cancelled"})
        return self.job.result  # type: ignore[no-any-return]


class _EagerAttempt:
    """Just enough of the worker's attempt for ``current_job()``."""

    def __init__(self, job: EagerJob, name: str) -> None:
        self.job = job
        self.queue = job.queue
        self.claimed = type("Claimed", (), {"id": job.id, "attempts": job.attempts})()
        self.task = type("TaskName", (), {"name": name})()
        self.aborted = False
        self.context: JobContext | None = None
        self.children: list[ChildOutcome] | None = None

    def make_context(self, _attempt: Any) -> JobContext:
        def submit(kind: str, value: bytes | str) -> None:
            if kind == "progress":
                self.job.progress = serialization.loads(value)
            else:
                self.job.logs.append(str(value))

        return JobContext(self, submit)


class EagerClient:
    """A stand-in for :class:`~conveyor.Client` that runs each task when it is enqueued."""

    def __init__(self, tasks: Tasks, *, max_attempts_cap: int = 20) -> None:
        self.tasks = tasks
        self.jobs: list[EagerJob] = []
        self._by_id: dict[str, EagerJob] = {}
        self._cap = max_attempts_cap

    def enqueue(self, task: Task[P, R], /, *args: P.args, **kwargs: P.kwargs) -> EagerHandle[R]:
        return self._run(task.call(*args, **kwargs))

    def enqueue_many(self, calls: Iterable[TaskCall[R]]) -> list[EagerHandle[R]]:
        return [self._run(call) for call in calls]

    def enqueue_flow(self, flow: Flow) -> FlowHandle[EagerHandle[Any]]:
        """Run the children (depth first, in order), then the parent with their outcomes."""
        handles: list[Any] = []
        outcomes: list[ChildOutcome] = []
        for child in flow.children:
            handle = self.enqueue_flow(child) if isinstance(child, Flow) else self._run(child)
            handles.append(handle)
            job = (handle.job if isinstance(handle, FlowHandle) else handle).job
            outcomes.append(_outcome(job))
        failed = next((o for o in outcomes if o.state != "completed"), None)
        if failed is not None and flow.on_child_failure == "fail":
            return FlowHandle(self._failed_parent(flow.job, failed), handles)
        return FlowHandle(self._run(flow.job, outcomes, flow.pass_results), handles)

    def enqueue_flows(self, flows: Iterable[Flow]) -> list[FlowHandle[EagerHandle[Any]]]:
        return [self.enqueue_flow(flow) for flow in flows]

    def _failed_parent(self, call: TaskCall[Any], child: ChildOutcome) -> EagerHandle[Any]:
        job = EagerJob(
            call.options.job_id or new_job_id(), call.task, call.queue, list(call.args), call.kwargs
        )
        job.state = JobState.FAILED
        job.error = ChildFailed(f"child {child.queue} {child.id} {child.state}")
        self.jobs.append(job)
        self._by_id[job.id] = job
        return EagerHandle(job, EnqueueOutcome.CREATED)

    def _run(
        self,
        call: TaskCall[Any],
        children: list[ChildOutcome] | None = None,
        pass_results: bool | str = False,
    ) -> EagerHandle[Any]:
        # Encode as the real client does, so unserialisable arguments fail here too.
        serialization.dumps(list(call.args), what=f"arguments of {call.task}")
        if call.kwargs:
            serialization.dumps(call.kwargs, what=f"keyword arguments of {call.task}")
        job_id = call.options.job_id or new_job_id()
        if job_id in self._by_id:
            return EagerHandle(self._by_id[job_id], EnqueueOutcome.EXISTED)
        task = self.tasks.get(call.task)
        args = list(call.args)
        if children is not None and pass_results:  # as the worker does: one result, or a list
            results = [child.result for child in children]
            args.insert(0, results[0] if len(results) == 1 and pass_results != "list" else results)
        job = EagerJob(job_id, call.task, call.queue, args, dict(call.kwargs))
        self.jobs.append(job)
        self._by_id[job_id] = job
        retries = call.options.retries if call.options.retries is not None else task.defaults.retries
        while True:
            job.attempts += 1
            attempt = _EagerAttempt(job, call.task)
            attempt.children = children
            token = _current.set(attempt)
            try:
                value = task.function(*args, **call.kwargs)
                if inspect.isawaitable(value):
                    value = asyncio.run(_awaited(value))
                job.result = serialization.loads(serialization.dumps(value, what=f"result of {call.task}"))
                job.state = JobState.COMPLETED
                break
            except RetryAfter:
                job.attempts -= 1
                if job.attempts + 1 >= self._cap:
                    raise
            except Exception as exc:
                job.error = exc
                if job.attempts > retries or isinstance(exc, Fail):  # Fail: no retries, as a worker
                    job.state = JobState.FAILED
                    break
            finally:
                _current.reset(token)
        return EagerHandle(job, EnqueueOutcome.CREATED)


class ChildFailed(Exception):
    """An eager flow's parent did not run: one of its children failed."""


def _outcome(job: EagerJob) -> ChildOutcome:
    if job.state is JobState.COMPLETED:
        return ChildOutcome(job.queue, job.id, "completed", result=job.result)
    error = {"type": type(job.error).__name__, "message": str(job.error)}
    state: Any = "cancelled" if job.state is JobState.CANCELLED else "failed"
    return ChildOutcome(job.queue, job.id, state, error=error)


async def _awaited(value: Any) -> Any:
    return await value

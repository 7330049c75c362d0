"""What a running job knows about itself: ``current_job()`` inside a task.

::

    @tasks.task
    async def import_file(path: str) -> int:
        job = current_job()
        for i, chunk in enumerate(chunks(path)):
            job.raise_if_cancelled()
            ...
            job.progress({"done": i})
            job.log(f"chunk {i} imported")
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from typing import Any

from . import serialization
from .errors import ConveyorError

MAX_LOG_LINE = 2_000
"""Characters kept of one log line."""


class Cancelled(ConveyorError):
    """Raised by :meth:`JobContext.raise_if_cancelled` when someone cancelled the running job."""

    code = "CANCELLED"


class JobContext:
    """The running job: its identity, and progress, logs and cancellation.

    ``progress`` and ``log`` return at once from async and sync tasks alike: the write is
    handed to the worker's event loop, which sends it in order before the job's result.
    Made on first use of :func:`current_job`, so jobs that never ask cost nothing.
    """

    __slots__ = ("_job", "_submit")

    def __init__(self, job: Any, submit: Callable[[str, bytes | str], None]) -> None:
        self._job = job  # the worker's execution.Prepared for this attempt
        self._submit = submit

    @property
    def id(self) -> str:
        return str(self._job.claimed.id)

    @property
    def queue(self) -> str:
        return str(self._job.queue)

    @property
    def task(self) -> str:
        return str(self._job.task.name)

    @property
    def attempt(self) -> int:
        """1 for the first run, 2 for the first retry, ..."""
        return int(self._job.claimed.attempts)

    @property
    def retries_left(self) -> int:
        """Retries still to come if this attempt fails (0 on the last attempt)."""
        return max(0, int(self._job.retries) - self.attempt + 1)

    @property
    def children(self) -> list[Any]:
        """For the parent of a flow: a :class:`~conveyor.flows.ChildOutcome` per child
        (queue, id, state, result, error), in the order the children were given; else []."""
        return list(self._job.children or [])

    @property
    def cancelled(self) -> bool:
        """True once someone asked to abort this job (``client.cancel`` while it runs)."""
        return bool(self._job.aborted)

    def raise_if_cancelled(self) -> None:
        """For sync tasks, which cannot be interrupted: call this at safe points."""
        if self._job.aborted:
            raise Cancelled(f"job {self.id} was cancelled")

    def progress(self, value: Any) -> None:
        """Record progress: a number or a small JSON-compatible object (at most 8 KB)."""
        self._submit("progress", serialization.dumps(value, what="progress", limit=8_192))

    def log(self, line: str) -> None:
        """Append one line to the job's log (the last 1,000 lines are kept)."""
        self._submit("log", str(line)[:MAX_LOG_LINE])


_current: contextvars.ContextVar[Any] = contextvars.ContextVar("conveyor_current_job")
"""Holds the worker's ``execution.Prepared`` for the running attempt."""


def current_job() -> JobContext:
    """The job running in this task or thread; ``LookupError`` outside a job."""
    try:
        job = _current.get()
    except LookupError:
        raise LookupError("current_job() is only available inside a task run by a Conveyor worker") from None
    if job.context is None:
        job.context = job.make_context(job)
    return job.context  # type: ignore[no-any-return]


def set_current(job: Any) -> None:
    """Set ``current_job()`` for the running asyncio task (each task has its own context copy)."""
    _current.set(job)


def run_with_context(job: Any, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``function`` with ``current_job()`` set (used for sync tasks, in their thread)."""
    _current.set(job)
    return function(*args, **kwargs)


def loop_submitter(
    loop: asyncio.AbstractEventLoop, send: Callable[[str, bytes | str], Any]
) -> Callable[..., None]:
    """A ``submit`` that works from the loop's thread and from worker threads alike."""

    def submit(kind: str, value: bytes | str) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            send(kind, value)
        else:
            loop.call_soon_threadsafe(send, kind, value)

    return submit

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
    """

    __slots__ = ("_cancelled", "_submit", "attempt", "cancel_reason", "id", "queue", "task", "token")

    def __init__(
        self,
        *,
        id: str,
        queue: str,
        task: str,
        attempt: int,
        token: str,
        submit: Callable[[str, bytes | str], None],
    ) -> None:
        self.id = id
        self.queue = queue
        self.task = task
        self.attempt = attempt
        self.token = token
        self._submit = submit
        # A plain flag, not a threading.Event: one is made per job, and a bool is atomic to read.
        self._cancelled = False
        self.cancel_reason: dict[str, Any] | None = None

    @property
    def cancelled(self) -> bool:
        """True once someone asked to abort this job (``client.cancel`` while it runs)."""
        return self._cancelled

    def raise_if_cancelled(self) -> None:
        """For sync tasks, which cannot be interrupted: call this at safe points."""
        if self._cancelled:
            raise Cancelled(f"job {self.id} was cancelled")

    def progress(self, value: Any) -> None:
        """Record progress: a number or a small JSON-compatible object (at most 8 KB)."""
        self._submit("progress", serialization.dumps(value, what="progress", limit=8_192))

    def log(self, line: str) -> None:
        """Append one line to the job's log (the last 1,000 lines are kept)."""
        self._submit("log", str(line)[:MAX_LOG_LINE])

    def _mark_cancelled(self, reason: dict[str, Any] | None) -> None:
        self.cancel_reason = reason
        self._cancelled = True


_current: contextvars.ContextVar[JobContext] = contextvars.ContextVar("conveyor_current_job")


def current_job() -> JobContext:
    """The job running in this task or thread; ``LookupError`` outside a job."""
    try:
        return _current.get()
    except LookupError:
        raise LookupError("current_job() is only available inside a task run by a Conveyor worker") from None


def run_with_context(context: JobContext, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``function`` with ``current_job()`` set (used for sync tasks, in their thread)."""
    _current.set(context)
    return function(*args, **kwargs)


def set_current(context: JobContext) -> None:
    """Set ``current_job()`` for the running asyncio task (each task has its own context copy)."""
    _current.set(context)


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

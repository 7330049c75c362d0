"""Worker hooks: code that runs around every job, for metrics, tracing or cleanup.

Subclass :class:`Hooks` and override what you need; pass instances to the worker
(``Worker(tasks, hooks=[MyHooks()])``). Hooks run in the worker's event loop thread, must be
quick, and cannot change a job's outcome: an exception in a hook is logged and ignored.
"""

from __future__ import annotations

from typing import Any

from .context import JobContext


class Hooks:
    """No-op hooks; override any of them."""

    def before_job(self, job: JobContext) -> None:
        """The job is about to start (its task has been found and its arguments decoded)."""

    def after_job(self, job: JobContext, result: Any) -> None:
        """The job completed with ``result``."""

    def on_retry(self, job: JobContext, error: BaseException, delay: float) -> None:
        """The job failed and will run again after ``delay`` seconds."""

    def on_failure(self, job: JobContext, error: BaseException) -> None:
        """The job failed for good (dead-lettered)."""

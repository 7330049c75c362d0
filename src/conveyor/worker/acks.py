"""Acknowledgements: a worker's finished jobs written back to Redis in batches.

Whatever finishes while a batch is in flight goes in the next one, so acknowledging costs
one round trip per batch and queue, not one per job. Progress and log lines (*reports*) are
written before results: a job's last progress is recorded before the job completes, never
refused after it. A batch Redis cannot take now is kept and sent again: results are not
lost while Redis is away, and the heartbeat keeps renewing the jobs' leases meanwhile.
A result whose lease had run out (the job was re-delivered; a newer attempt owns it) is
refused by the script and the refusal logged. A batch sent again after its connection broke
may have been recorded by the first try: the scripts know the attempt's own outcome when
they see it again and answer "recorded already", so the log says which of the two happened.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from .. import ops
from ..errors import RETRYABLE_REDIS_ERRORS
from ..ops.keys import QueueKeys
from ..redis.executors import AsyncExecutor
from .sweeper import tell_parents

if TYPE_CHECKING:
    from ..metrics.worker import TaskFigures, WorkerMetrics

log = logging.getLogger("conveyor.worker")

_PARENT_NOTIFIED = (2, 12, 13)
"""complete/fail replies meaning: recorded, and a note for the job's parent is in the outbox."""


class Acknowledger:
    """Collects a worker's outcomes on the event loop; :meth:`run` writes them back.

    ``settled(queue, tokens)`` is called once Redis took (or refused) the outcomes of a
    batch: from then on the worker no longer holds those attempts.
    """

    def __init__(
        self,
        executor: AsyncExecutor,
        keys: Mapping[str, QueueKeys],
        *,
        completed: ops.Retention,
        failed: ops.Retention,
        settled: Callable[[str, list[str]], None],
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.executor = executor
        self.keys = keys
        self.completed_retention = completed
        self.failed_retention = failed
        self.settled = settled
        self._done: dict[str, list[tuple[str, str, bytes]]] = {q: [] for q in keys}
        self._failures: dict[str, list[tuple[str, str, bytes, int, int]]] = {q: [] for q in keys}
        self._reports: list[Any] = []
        self._metrics = metrics
        self._failure_figures: dict[str, list[TaskFigures | None]] = {q: [] for q in keys}
        self.times: dict[str, ops.Tally] = {q: ops.Tally() for q in keys}
        """Per queue, the wait and run times measured since its last acknowledgement: the
        fleet's figures in Redis get them with the next one (see ``ops.metrics.Tally``)."""
        """With metrics on, the figures of each failure in ``_failures``, in step with it:
        Redis's answer says how each was recorded (retried, dead-lettered, cancelled)."""
        self._outbox_due: set[str] = set()
        """Queues whose outbox holds notes for parents in flows, to deliver after this flush."""
        self._wanted = asyncio.Event()
        self._finishing = False
        self.written = asyncio.Event()
        """Set while every outcome handed in is written, and the parents it concerns were told
        (burst mode waits for it: a retry or a flow's parent may become work only then)."""
        self.written.set()

    # ------------------------------------------------------------------ on the loop
    def completed(self, queue: str, job_id: str, token: str, result: bytes) -> None:
        self._done[queue].append((job_id, token, result))
        self.written.clear()
        self._wanted.set()

    def failed(
        self,
        queue: str,
        job_id: str,
        token: str,
        error: bytes,
        delay_ms: int,
        deferral_cap: int,
        figures: TaskFigures | None = None,
    ) -> None:
        """``delay_ms``: when to run again (``ops.RETRY_NEVER``: dead-letter it; ``ops.CANCELLED``);
        ``deferral_cap``: ``ops.NOT_DEFERRED``, or for a ``RetryAfter`` the task's max_deferrals;
        ``figures``: where the metrics count how Redis recorded it."""
        self._failures[queue].append((job_id, token, error, delay_ms, deferral_cap))
        if self._metrics is not None:
            self._failure_figures[queue].append(figures)
        self.written.clear()
        self._wanted.set()

    def report(self, operation: Any) -> None:
        """A progress or log write of a running job (best effort, unlike results)."""
        self._reports.append(operation)
        self._wanted.set()

    def finish(self) -> None:
        """No more outcomes will come: :meth:`run` returns once everything was written."""
        self._finishing = True
        self._wanted.set()

    # ------------------------------------------------------------------ the loop
    async def run(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            await self._send_reports()
            for queue, keys in self.keys.items():
                if self._done[queue]:
                    await self._flush(keys, self._done, ops.complete, self.completed_retention)
                if self._failures[queue]:
                    await self._flush(keys, self._failures, ops.fail, self.failed_retention)
            while self._outbox_due:
                queue = self._outbox_due.pop()
                await tell_parents(self.executor, self.keys[queue], self.failed_retention)
            if not any(self._done.values()) and not any(self._failures.values()):
                self.written.set()
                if self._finishing:
                    await self._send_last_times()
                    return

    async def _send_last_times(self) -> None:
        """The times no acknowledgement carried (jobs handed back at shutdown ran too): with an
        empty batch, once. Best effort: a figure is not worth holding up a stop."""
        for queue, keys in self.keys.items():
            times = self.times[queue].take()
            if times:
                try:
                    await self.executor.run(ops.complete(keys, self.completed_retention, [], times))
                except RedisError as exc:
                    log.debug("could not add the last measured times of %s: %s", queue, exc)

    async def _send_reports(self) -> None:
        while self._reports:
            reports, self._reports = self._reports, []
            for report in reports:
                try:
                    await self.executor.run(report)
                except RedisError as exc:  # progress is best effort; results are not
                    log.warning("could not record a job's progress or log line: %s", exc)

    async def _flush(
        self, keys: QueueKeys, buffer: dict[str, list[Any]], operation: Any, retention: ops.Retention
    ) -> None:
        # Reports first: a job's progress and log lines are submitted before its result, so
        # once they are written, no report of a job in this batch is still waiting.
        await self._send_reports()
        queue = keys.queue
        batch = buffer[queue]
        buffer[queue] = []
        metrics = self._metrics
        figures = None
        if metrics is not None and buffer is self._failures:  # taken with the batch, in step
            figures, self._failure_figures[queue] = self._failure_figures[queue], []
        # The queue's wait and run times since its last acknowledgement go with this one: sent
        # again with it if it is retried (so twice, in the rare case where a try whose reply
        # was lost got through: a figure, unlike an outcome, cannot tell).
        times = self.times[queue].take()
        delay = 0.05
        while True:
            try:
                if metrics is None:
                    replies = await self.executor.run(operation(keys, retention, batch, times))
                else:  # a round trip made anyway, timed: one clock pair per batch
                    sent = time.perf_counter()
                    replies = await self.executor.run(operation(keys, retention, batch, times))
                    metrics.acknowledged(time.perf_counter() - sent)
                break
            except RETRYABLE_REDIS_ERRORS as exc:
                # Keep the batch: the results are not lost while Redis is away, and the
                # heartbeat keeps extending their leases once it is back.
                log.warning(
                    "could not record %d finished jobs (%s); retrying in %.1f s", len(batch), exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        self.settled(queue, [item[1] for item in batch])
        if metrics is not None and figures is not None:
            metrics.failures_recorded(figures, (item[3] for item in batch), replies)
        for job_id, reply in zip((item[0] for item in batch), replies, strict=True):
            if reply in _PARENT_NOTIFIED:
                self._outbox_due.add(queue)
            if reply == ops.ALREADY_RECORDED:
                log.info(
                    "job %s/%s: outcome recorded already, by the try whose reply the connection lost",
                    queue,
                    job_id,
                )
            elif not reply:
                if metrics is not None:
                    metrics.stale_acks += 1
                log.warning(
                    "job %s/%s: outcome discarded: its lease had run out and it was re-delivered",
                    queue,
                    job_id,
                )

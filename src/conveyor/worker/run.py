"""Running claimed jobs: start each, run it, and hand its outcome to the acknowledger.

Async tasks (and jobs isolated in a process) run as asyncio tasks, which can be cancelled; sync
tasks run in a bounded thread pool with the caller's context variables copied, and can only be
flagged. A job ends in one of four ways: it returns (completed), raises (retried or failed for
good, see :func:`~conveyor.worker.outcome.retry_delay_ms`), is cancelled by a client (recorded as
cancelled), or is cancelled by the worker's shutdown (left held, and handed back to waiting).
Hooks run around each job on the event loop.

An attempt whose lease was lost -- the job was re-delivered because its lease ran out, to this
worker or another -- is *fenced out*: Redis refuses its outcome and a newer attempt owns the
job. It is stopped at once (cancelled if async, flagged through ``current_job().cancelled`` if
sync): its result would be thrown away, and running on would only do the job's work twice at
the same time. It records nothing.

This is the per-job path: it adds no call, allocation or attribute hop a job does not need.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import Awaitable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from .. import ops, serialization, tracing
from ..context import JobContext, loop_submitter, run_with_context, set_current
from ..dev import faults
from ..errors import RetryAfter, SerializationError
from ..hooks import Hooks
from ..ops.keys import QueueKeys
from ..task import Tasks
from . import isolation
from .acks import Acknowledger
from .heartbeat import Answers
from .held import Held, HeldJobs
from .outcome import Prepared, Undeliverable, error_payload, prepare, retry_delay_ms

if TYPE_CHECKING:
    from ..metrics.worker import TaskFigures, WorkerMetrics

log = logging.getLogger("conveyor.worker")

MAX_LOG_LINES = 1_000
"""Log lines kept per job."""
LOG_KEEP_MS = 7 * 24 * 3600 * 1000
"""How long a job's log outlives its last line."""


def _log_job(level: int, event: str, job: Prepared, message: str, *args: Any, **fields: Any) -> None:
    """One log line per job event; with ``--log-format json`` the fields become JSON keys."""
    extra = {
        "event": event,
        "queue": job.queue,
        "job_id": job.claimed.id,
        "task": job.task.name,
        "attempt": job.claimed.attempts,
        **fields,
    }
    log.log(
        level,
        "job %s/%s %s (attempt %d) " + message,
        job.queue,
        job.claimed.id,
        job.task.name,
        job.claimed.attempts,
        *args,
        extra=extra,
    )


class JobRunner:
    """Runs the jobs one worker claimed; counts them for the worker's registry entry.

    ``busy`` counts running jobs, ``processed`` completed ones, ``failed`` those failed for good.
    """

    def __init__(
        self,
        *,
        tasks: Tasks,
        hooks: list[Hooks],
        keys: Mapping[str, QueueKeys],
        held: HeldJobs,
        acks: Acknowledger,
        loop: asyncio.AbstractEventLoop,
        pool: ThreadPoolExecutor,
        max_payload_bytes: int,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.tasks = tasks
        self.hooks = hooks
        self.keys = keys
        self._held_jobs = held
        self._held = held.by_queue
        self._slot_freed = held.slot_freed
        self._acks = acks
        self._loop = loop
        self._pool = pool
        self._max_payload_bytes = max_payload_bytes
        self._make_context_bound = self._make_context  # one bound method, not one per job
        self._tracing = tracing.from_env()
        """None with tracing off: then each tracing step of the job path is one None check."""
        self.busy = 0
        self.processed = 0
        self.failed = 0
        self._metrics = metrics
        """None with metrics off: then each metrics step of the job path is one None check."""

    # ------------------------------------------------------------------ starting
    def start_all(self, queue: str, jobs: Sequence[ops.Claimed], claimed_at_ms: int = 0) -> None:
        """Hold every claimed job before starting any: the heartbeat thread renews held jobs
        only, and starting one can take long when threads busy in pure Python hold the GIL
        (the pool starts a thread per sync job at first, and each start waits for the GIL:
        50 such threads kept the last of 50 claimed jobs from starting for about 8 s)."""
        held = self._held[queue]
        times = self._acks.times[queue]
        for claimed in jobs:
            times.waited(claimed_at_ms - claimed.ready_ms)
            if claimed.attempts > 1:  # a job coming back: this worker may still run it
                self._fence_older_attempt(queue, claimed)
            held[claimed.token] = Held(claimed.id)
        if self._tracing is None:
            for claimed in jobs:
                self._start(queue, claimed)
        else:
            for claimed in jobs:  # each in a context of its own, where its span is made current
                contextvars.copy_context().run(self._start, queue, claimed)

    def _start(self, queue: str, claimed: ops.Claimed) -> None:
        if faults.ARMED:  # crash points for the reliability tests; off in production
            faults.reach("after_claim")
            faults.reach("in_promotion")
        held = self._held[queue][claimed.token]
        try:
            job = prepare(queue, claimed, self.tasks)
        except Undeliverable as exc:
            log.error("job %s/%s cannot run: %s", queue, claimed.id, exc)
            if self._tracing is not None:
                self._tracing.undeliverable(queue, claimed, exc)
            payload = serialization.dumps({"type": exc.kind, "message": str(exc), "reason": exc.reason})
            figures = None if self._metrics is None else self._metrics.undeliverable(queue, claimed.task)
            self._record_failure(queue, claimed, payload, -1, figures=figures)
            return
        self.busy += 1
        job.started = self._loop.time()
        metrics = self._metrics
        if metrics is not None:  # the lookup inlined (a method call costs more than the rest)
            figures = metrics.tasks[queue].get(claimed.task) or metrics.task(queue, claimed.task)
            figures.started += 1
            job.figures = figures
        job.make_context = self._make_context_bound
        if self._tracing is not None:  # current before the hooks run and the task and thread copy it
            self._tracing.begin(queue, claimed)
        if self.hooks:
            self._call_hooks("before_job", job)
        if faults.ARMED:
            faults.reach("before_handler")
        if job.task.cancellable:
            running: asyncio.Future[Any] = self._loop.create_task(self._run_async(job))
        else:
            call = functools.partial(
                contextvars.copy_context().run,
                run_with_context,
                job,
                job.task.function,
                *job.args,
                **job.kwargs,
            )
            in_thread = self._loop.run_in_executor(self._pool, call)
            if metrics is not None:
                metrics.thread_started(in_thread)
            running = self._loop.create_task(self._run_sync(job, in_thread))
        held.job = job
        held.task = running
        if self._tracing is not None:
            self._tracing.watch(claimed, job, running)

    # ------------------------------------------------------------------ running
    async def _run_async(self, job: Prepared) -> None:
        """Run an async job, or a job isolated in a process: both can be stopped at once."""
        set_current(job)
        try:
            call: Awaitable[Any]
            if job.task.defaults.isolation == "process":
                call = isolation.run_in_process(job.task.function, job.task.name, job.args, job.kwargs)
            else:
                call = job.task.function(*job.args, **job.kwargs)
            if job.timeout:
                async with asyncio.timeout(job.timeout):
                    result = await call
            else:
                result = await call
        except asyncio.CancelledError:
            if job.fenced:
                self._release(job)  # a newer attempt owns the job: nothing to record
                return
            if job.aborted:
                self._finish_cancelled(job)
                return
            self._release(job)  # shutdown: the job stays held and is handed back to waiting
            raise
        except BaseException as exc:
            self._finish_error(job, exc)
        else:
            self._finish_ok(job, result)

    async def _run_sync(self, job: Prepared, future: asyncio.Future[Any]) -> None:
        try:
            if job.timeout:
                # The thread cannot be interrupted: on timeout the job is failed now and
                # the thread's late result, whenever it comes, is discarded.
                result = await asyncio.wait_for(asyncio.shield(future), job.timeout)
            else:
                result = await future
        except asyncio.CancelledError:
            self._release(job)
            raise
        except BaseException as exc:
            if job.fenced:
                self._release(job)
            elif job.aborted:
                self._finish_cancelled(job)
            else:
                self._finish_error(job, exc)
        else:
            if job.fenced:  # it ran to the end anyway; a newer attempt owns the job
                self._release(job)
            elif job.aborted:  # it ran to the end anyway; the abort still decides its outcome
                self._finish_cancelled(job)
            else:
                self._finish_ok(job, result)

    def _make_context(self, job: Prepared) -> JobContext:
        return JobContext(job, self._submitter(job.queue, job.claimed.id, job.claimed.token))

    def _submitter(self, queue: str, job_id: str, token: str) -> Any:
        keys = self.keys[queue]

        def send(kind: str, value: bytes | str) -> None:
            # Queued for the flush loop, which writes reports before results: a job's last
            # progress is recorded before the job is completed, never refused after it.
            self._acks.report(ops.report(keys, job_id, token, kind, value, MAX_LOG_LINES, LOG_KEEP_MS))

        return loop_submitter(self._loop, send)

    # ------------------------------------------------------------------ leases
    def on_lease_answers(self, queue: str, lost: Answers, aborted: Answers) -> None:
        """What the heartbeat thread learnt, on the loop. Each answer names an attempt (token):
        it may have finished, or been fenced out, since."""
        held = self._held[queue]
        for token in aborted:
            self._abort(queue, token)
        for token in lost:
            entry = held.get(token)
            # A finished job waits for (or is in) its acknowledgement, which settles it and
            # says so if the result was discarded; the renewal may just have raced the ack.
            if entry is None or entry.task is None:
                continue
            self._fence(queue, token, "its lease was lost (it was re-delivered)")

    def _fence_older_attempt(self, queue: str, claimed: ops.Claimed) -> None:
        """This worker was handed a job it still runs: its lease ran out (an outage longer than
        the lease, a stall) and the sweep re-delivered it. The old attempt is fenced out."""
        token = self._held_jobs.attempt_of(queue, claimed.id)
        if token is not None:
            self._fence(queue, token, f"it was handed to this worker again (attempt {claimed.attempts})")

    def _fence(self, queue: str, token: str, why: str) -> None:
        """Stop an attempt a newer one replaced, and forget it: it records nothing."""
        entry = self._held[queue].pop(token)
        job = entry.job
        if entry.task is None or job is None:  # finished: its acknowledgement will be refused
            return
        if self._metrics is not None:  # a finished attempt's lost lease shows as a stale ack
            self._metrics.leases_lost += 1
        job.fenced = True
        job.aborted = True  # what current_job().cancelled reads: a sync job may stop early
        if job.task.cancellable:
            entry.task.cancel()
        log.warning(
            "job %s/%s: %s; stopping the old attempt, whose result would be discarded",
            queue,
            entry.job_id,
            why,
        )

    def _abort(self, queue: str, token: str) -> None:
        """Someone cancelled a running job: cancel an async task, flag a sync one."""
        held = self._held[queue].get(token)
        if held is None or held.task is None or held.job is None or held.job.aborted:
            return
        running, job = held.task, held.job
        job.aborted = True  # what current_job().cancelled reads
        if job.task.cancellable:
            running.cancel()
        log.warning("job %s/%s: cancelled while running; stopping it", queue, held.job_id)

    # ------------------------------------------------------------------ finishing
    def _release(self, job: Prepared) -> None:
        self.busy -= 1
        ran = self._loop.time() - job.started  # every run that ended, whatever its outcome
        self._acks.times[job.queue].ran(ran)
        figures = job.figures
        if figures is not None:
            figures.observe(ran)
        held = self._held[job.queue].get(job.claimed.token)
        if held is not None:
            held.task = None
        self._slot_freed.set()

    def _finish_ok(self, job: Prepared, result: Any) -> None:
        self._release(job)
        if faults.ARMED:
            faults.reach("after_handler")
        try:
            payload = serialization.dumps(
                result, what=f"result of {job.task.name}", limit=self._max_payload_bytes
            )
        except (SerializationError, ValueError) as exc:
            self._record_failure(
                job.queue, job.claimed, error_payload(exc, reason="bad_result"), -1, figures=job.figures
            )
            if self._tracing is not None:
                self._tracing.failed(job, exc, -1)
            return
        self._acks.completed(job.queue, job.claimed.id, job.claimed.token, payload)
        self.processed += 1
        if job.figures is not None:
            job.figures.completed += 1
        if self.hooks:
            self._call_hooks("after_job", job, result)
        if log.isEnabledFor(logging.INFO):
            _log_job(logging.INFO, "completed", job, "completed in %.1f ms", self._elapsed_ms(job))

    def _finish_error(self, job: Prepared, exc: BaseException) -> None:
        self._release(job)
        if isinstance(exc, TimeoutError) and job.timeout:
            exc = TimeoutError(f"job exceeded its timeout of {job.timeout:g} s")
            reason = "timeout"
        else:
            reason = "exception"
        if isinstance(exc, RetryAfter):
            reason = "retry_after"
        delay = retry_delay_ms(job, exc)
        # A deferral gives the attempt back; its cap keeps a job from being deferred forever.
        cap = job.task.defaults.max_deferrals if isinstance(exc, RetryAfter) else ops.NOT_DEFERRED
        if faults.ARMED and delay >= 0:
            faults.reach("in_retry")
        self._record_failure(
            job.queue, job.claimed, error_payload(exc, reason=reason), delay, cap, figures=job.figures
        )
        if self._tracing is not None:
            self._tracing.failed(job, exc, delay)
        error = f"{type(exc).__name__}: {exc}"
        if self.hooks:
            if delay >= 0:
                self._call_hooks("on_retry", job, exc, delay / 1000)
            else:
                self._call_hooks("on_failure", job, exc)
        if delay >= 0:
            _log_job(
                logging.WARNING,
                "retrying",
                job,
                "failed, retrying in %.1f s: %s",
                delay / 1000,
                error,
                retry_in_ms=delay,
                error=error,
            )
        else:
            _log_job(logging.ERROR, "failed", job, "failed for good: %s", error, error=error)

    def _finish_cancelled(self, job: Prepared) -> None:
        self._release(job)
        payload = serialization.dumps(
            {"type": "Cancelled", "message": "cancelled while running", "reason": "cancelled", "by": "client"}
        )
        self._record_failure(job.queue, job.claimed, payload, ops.CANCELLED, figures=job.figures)
        _log_job(logging.WARNING, "cancelled", job, "cancelled")

    def _call_hooks(self, name: str, job: Prepared, *args: Any) -> None:
        if job.context is None:
            job.context = self._make_context(job)
        for hook in self.hooks:
            try:
                getattr(hook, name)(job.context, *args)
            except Exception:
                log.exception("hook %s.%s failed (ignored)", type(hook).__name__, name)

    def _elapsed_ms(self, job: Prepared) -> float:
        return (self._loop.time() - job.started) * 1000

    def _record_failure(
        self,
        queue: str,
        claimed: ops.Claimed,
        payload: bytes,
        delay_ms: int,
        deferral_cap: int = ops.NOT_DEFERRED,
        *,
        figures: TaskFigures | None = None,
    ) -> None:
        """``figures``: where Redis's answer is counted (retried, failed or cancelled)."""
        self._acks.failed(queue, claimed.id, claimed.token, payload, delay_ms, deferral_cap, figures)
        if delay_ms == ops.RETRY_NEVER:
            self.failed += 1

"""The worker: claims jobs in batches, runs many at once, acknowledges them in batches.

Three loops share one event loop:

* the *fetch* loop claims up to as many jobs as there are free slots in one script call
  per queue (queues in strict priority order) and blocks in Redis (BZPOPMIN on the
  queue's marker) when there is nothing to do, waking when work arrives or the next
  delayed job is due; a suspect (a job that lost its worker too often) comes only when
  the worker holds nothing, and alone, and the loop claims nothing more until it is done;
* the *flush* loop writes finished jobs back in batches: whatever finished while the
  previous batch was in flight goes in the next one, so acknowledgements cost one round
  trip per batch, not per job (:mod:`conveyor.worker.acks`);
* the *sweep* loop moves expired leases of dead workers back to waiting
  (:mod:`conveyor.worker.sweeper`).

The leases of held jobs are renewed from a thread of their own (:mod:`conveyor.worker.heartbeat`),
so that async jobs blocking the loop cannot starve the renewals.

Async tasks run as asyncio tasks; sync tasks run in a bounded thread pool with the
caller's context variables copied.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import logging
import os
import random
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from .. import ops, serialization
from ..config import Settings
from ..context import JobContext, loop_submitter, run_with_context, set_current
from ..dev import faults
from ..errors import RETRYABLE_REDIS_ERRORS, RetryAfter, SerializationError
from ..hooks import Hooks
from ..ops import workers as registry
from ..ops.keys import QueueKeys, worker_key, workers_key
from ..redis.base import AsyncTransport
from ..redis.connect import as_async_transport, async_transport, sync_transport, sync_twin
from ..redis.executors import AsyncExecutor
from ..redis.redispy import RedisPyAsyncTransport
from ..task import Tasks
from . import isolation
from .acks import Acknowledger
from .heartbeat import Answers, Heartbeat
from .outcome import Prepared, Undeliverable, error_payload, prepare, retry_delay_ms
from .scheduler import run_schedulers
from .sweeper import Sweeper

log = logging.getLogger("conveyor.worker")

_RETRYABLE_REDIS = RETRYABLE_REDIS_ERRORS
MAX_LOG_LINES = 1_000
"""Log lines kept per job."""
LOG_KEEP_MS = 7 * 24 * 3600 * 1000
"""How long a job's log outlives its last line."""


async def _call(function: Callable[[], Any]) -> None:
    """A startup or shutdown function of the tasks, sync or async (see ``Tasks.on_startup``)."""
    if inspect.isawaitable(outcome := function()):
        await outcome


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


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """How a worker behaves. Times are in seconds."""

    concurrency: int = 100
    """Jobs run at once by this process."""
    threads: int | None = None
    """Threads for sync tasks; default ``min(concurrency, 64)``."""
    lease: float = 10.0
    """How long a claimed job stays ours without a heartbeat. A job of a dead worker is
    re-delivered within ``lease + sweep_interval``."""
    sweep_interval: float = 5.0
    max_crashes: int = 3
    """A job whose worker was lost this many times is dead-lettered instead of re-delivered."""
    alone_after: int | None = None
    """A job whose worker was lost this many times runs only alone from then on: handed to a
    worker that holds no other job, which claims nothing more while it runs, so a job that
    kills its worker takes no other job with it. Default ``max_crashes - 1``: a job's last
    chance is always alone, so no job is dead-lettered for a crash another job caused; 1
    isolates every job of a lost worker, at the cost of running them one per worker."""
    make_room_after: float = 5.0
    """How long a job that must run alone waits for an idle worker before busy workers are
    asked, one more every ``make_room_after`` seconds, to stop claiming until they are idle
    (or no such job waits any more)."""
    shutdown_grace: float = 30.0
    """On SIGTERM, how long running jobs may take before they are handed back to waiting."""
    burst: bool = False
    """Drain the queues, then exit."""
    completed: ops.Retention = field(default_factory=lambda: ops.Retention(10_000, 24 * 3600 * 1000))
    """Completed jobs kept per queue: at most this many, for at most this long (ms)."""
    failed: ops.Retention = field(default_factory=lambda: ops.Retention(100_000, 7 * 24 * 3600 * 1000))
    """Dead-lettered jobs kept per queue."""
    # Last, so that positional construction of the fields above still works.
    max_loop_block: float | None = None
    """How long the event loop may go without running before the worker counts as hung and
    stops renewing its leases, so that its jobs are re-delivered; default ``10 * lease``, at
    least 60 s. Leases are renewed from a thread, so async jobs that block the loop for less
    than this (one after another, too) do not lose their leases. A loop starved of the GIL by
    many threads busy in pure Python counts as blocked too, hence the generous default."""

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.lease < 1:
            raise ValueError("lease must be at least 1 second")
        if self.alone_after is not None and self.alone_after < 1:
            raise ValueError("alone_after must be at least 1")
        if self.make_room_after < 0:
            raise ValueError("make_room_after must not be negative")
        if self.max_loop_block is not None and self.max_loop_block <= 0:
            raise ValueError("max_loop_block must be positive")


@dataclass(slots=True)
class _Held:
    """A job this worker holds a lease on: running, or finished and waiting for its ack."""

    token: str
    job: Prepared | None = None
    task: asyncio.Future[Any] | None = None
    """Set while the job runs."""


class Worker:
    """Runs the tasks of a :class:`~conveyor.Tasks` registry.

    ::

        Worker(tasks, url="redis://localhost:6379/0", concurrency=200).run()
    """

    def __init__(
        self,
        tasks: Tasks,
        *,
        url: str | None = None,
        connection: AsyncTransport | Any = None,
        queues: Sequence[str] | None = None,
        settings: Settings | None = None,
        worker_settings: WorkerSettings | None = None,
        hooks: Sequence[Hooks] = (),
        **options: Any,
    ) -> None:
        self.tasks = tasks
        self.hooks = list(hooks)
        self.settings = settings or Settings.from_env(redis_url=url)
        base = worker_settings or WorkerSettings()
        self.config = WorkerSettings(
            **{**{f: getattr(base, f) for f in base.__dataclass_fields__}, **options}
        )
        self.queues = list(queues or tasks.queues)
        self.keys = {q: QueueKeys(q, self.settings.prefix) for q in self.queues}
        self._connection = connection
        self._url = url
        self._host = socket.gethostname()
        self.id = f"{self._host}:{os.getpid()}:{random.randrange(16**4):04x}"
        self._held: dict[str, dict[str, _Held]] = {q: {} for q in self.queues}
        self._make_context_bound = self._make_context  # one bound method, not one per job
        self._busy = 0
        self.processed = 0
        self.failed = 0
        self._stopping = False
        self._stopped_claiming = False
        self._alone = False
        """Claim nothing until this worker holds no job: it runs a suspect, which must run
        alone, or was told to make room for one (see ``scripts/claim.lua``)."""
        self._room_for: str | None = None
        """The queue whose suspect this worker makes room for: claimed from first once idle,
        or a busier queue earlier in the order would fill the room again."""
        self.loop_failure: BaseException | None = None
        """The error that ended one of the worker's loops, if one did (the worker then stops)."""
        self._signals = 0

    # ------------------------------------------------------------------ running
    def run(self) -> None:
        """Run until stopped by SIGTERM/SIGINT (or, in burst mode, until the queues are empty)."""
        try:
            import uvloop

            loop_factory: Any = uvloop.new_event_loop
        except ImportError:
            loop_factory = None
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(self.serve(install_signal_handlers=True))

    async def serve(self, install_signal_handlers: bool = False) -> None:
        """Run in the current event loop until :meth:`stop` (or burst mode) ends it."""
        self._loop = asyncio.get_running_loop()
        for function in self.tasks.startup:  # nothing is open yet: a failure leaves nothing behind
            await _call(function)
        owns_client = self._connection is None
        wait = self.settings.cluster_wait_ms / 1000
        self.transport = (
            async_transport(self.settings.redis_url, wait)
            if owns_client
            else as_async_transport(self._connection, wait)
        )
        # Its own connection, so a blocked loop cannot starve it; derived before anything runs.
        # A beat must not wait out a cluster refusal, a silent connection (half-open, a
        # blackhole) or a connect for longer than its interval: leases would lapse meanwhile,
        # while failing fast tries again at once over a new connection. (A half-open
        # connection cost a running job its 1.5 s lease with the URL's 5 s socket timeout.)
        beat_wait = min(wait, self.config.lease / 3)
        beat_transport = (
            sync_transport(self.settings.redis_url, beat_wait, timeout=self.config.lease / 3)
            if owns_client
            else sync_twin(self.transport, self._url, beat_wait, timeout=self.config.lease / 3)
        )
        self.executor = AsyncExecutor(self.transport)
        self._pool = ThreadPoolExecutor(
            max_workers=self.config.threads or min(self.config.concurrency, 64),
            thread_name_prefix="conveyor-job",
        )
        self._slot_freed = asyncio.Event()
        self._acks = Acknowledger(
            self.executor,
            self.keys,
            completed=self.config.completed,
            failed=self.config.failed,
            settled=self._settled,
        )
        self._stop_event = asyncio.Event()
        self._closing = asyncio.Event()
        if install_signal_handlers:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self._on_signal, sig)
        log.info(
            "worker %s starting: queues=%s concurrency=%d tasks=%d",
            self.id,
            ",".join(self.queues),
            self.config.concurrency,
            len(self.tasks),
        )
        await self._with_retries(self._register)
        await self._check_eviction_policy()
        self._heartbeat = Heartbeat(
            beat_transport,
            self._loop,
            self._held,
            self.keys,
            lease=self.config.lease,
            max_loop_block=self.config.max_loop_block or max(10 * self.config.lease, 60.0),
            registration=self._registration,
            on_answers=self._on_lease_answers,
            on_failure=self._on_heartbeat_failure,
        )
        await self._heartbeat.start()
        fetcher = asyncio.create_task(self._fetch_loop(), name="conveyor-fetch")
        flusher = asyncio.create_task(self._acks.run(), name="conveyor-flush")
        sweeper = asyncio.create_task(
            Sweeper(
                self.executor,
                self.keys,
                interval=self.config.sweep_interval,
                max_crashes=self.config.max_crashes,
                failed=self.config.failed,
                alone_after=self.config.alone_after,
                closing=self._closing,
            ).run(),
            name="conveyor-sweep",
        )
        scheduler = asyncio.create_task(
            run_schedulers(self.executor, list(self.keys.values()), self._closing, self.tasks.schedules()),
            name="conveyor-scheduler",
        )
        for loop_task in (fetcher, flusher, sweeper, scheduler):
            loop_task.add_done_callback(self._on_loop_end)
        try:
            await self._stop_event.wait()
        finally:
            self._stopped_claiming = True
            fetcher.cancel()
            await asyncio.gather(fetcher, return_exceptions=True)
            await self._drain_running()
            self._stopping = True
            self._acks.finish()
            await asyncio.gather(flusher, return_exceptions=True)
            # Not cancelled mid-command: redis-py's cluster client does not always survive that.
            self._closing.set()
            _, late = await asyncio.wait([sweeper, scheduler], timeout=5)
            for loop_task in late:
                loop_task.cancel()
            await asyncio.gather(sweeper, scheduler, return_exceptions=True)
            await self._heartbeat.stop()  # leases are renewed until every job finished or was flushed
            await self._hand_back()
            with contextlib.suppress(RedisError):
                await self.executor.run(
                    registry.unregister(
                        workers_key(self.settings.prefix), worker_key(self.id, self.settings.prefix), self.id
                    )
                )
            for function in reversed(self.tasks.shutdown):
                try:
                    await _call(function)
                except Exception:
                    log.exception("shutdown function %s failed", getattr(function, "__qualname__", function))
            self._pool.shutdown(wait=False, cancel_futures=True)
            if owns_client:
                await self.transport.aclose()
            log.info("worker %s stopped: %d completed, %d failed", self.id, self.processed, self.failed)
        if self.loop_failure is not None:
            raise self.loop_failure

    def _on_loop_end(self, task: asyncio.Task[Any]) -> None:
        """A loop that dies of an error it cannot wait out must not leave a worker that looks
        alive (it heartbeats) but no longer claims or acknowledges: log it and stop, so
        ``serve`` raises, the process exits non-zero and ``--processes`` restarts it."""
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            self._fail(task.get_name(), error)

    def _on_heartbeat_failure(self, error: BaseException) -> None:
        self._fail("conveyor-heartbeat (thread)", error)

    def _fail(self, name: str, error: BaseException) -> None:
        log.critical("worker loop %s failed, stopping the worker: %r", name, error, exc_info=error)
        if self.loop_failure is None:
            self.loop_failure = error
        self.stop()

    def stop(self) -> None:
        """Stop claiming; running jobs get ``shutdown_grace`` seconds to finish."""
        if not self._stop_event.is_set():
            self._stop_event.set()

    def _on_signal(self, sig: int) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info(
                "received %s: finishing running jobs (grace %.0f s); send again to stop at once",
                signal.Signals(sig).name,
                self.config.shutdown_grace,
            )
            self.stop()
        else:
            log.warning(
                "received %s again: stopping at once, handing running jobs back", signal.Signals(sig).name
            )
            for job in self._running_tasks():
                job.cancel()

    async def _drain_running(self) -> None:
        running = self._running_tasks()
        if not running:
            return
        _, pending = await asyncio.wait(running, timeout=self.config.shutdown_grace)
        if pending:
            log.warning(
                "%d jobs still running after the grace period; handing them back to waiting", len(pending)
            )
            for job in pending:
                job.cancel()
            await asyncio.wait(pending, timeout=1.0)

    async def _hand_back(self) -> None:
        """Requeue every job still held (running when we stopped), at once, not after lease expiry."""
        for queue, held in self._held.items():
            pairs = [(job_id, h.token) for job_id, h in held.items()]
            if pairs:
                try:
                    count = await self.executor.run(ops.requeue(self.keys[queue], pairs))
                    log.info("handed %d unfinished jobs of %s back to waiting", count, queue)
                except RedisError as exc:
                    log.error(
                        "could not hand %d jobs back (%s); they return after their lease expires",
                        len(pairs),
                        exc,
                    )
                held.clear()

    async def _check_eviction_policy(self) -> None:
        """Warn when Redis may evict keys under memory pressure: an evicted job is a lost job."""
        try:
            replies = await asyncio.wait_for(
                self.transport.call_on_primaries("CONFIG", "GET", "maxmemory-policy"), 2
            )
        except Exception:
            return  # the check is advice, never a reason not to start
        for reply in replies:  # one per server; a cluster has several
            # A flat [name, value] list from the fast transport, a {name: value} dict from redis-py.
            policy = reply.get("maxmemory-policy", "") if isinstance(reply, dict) else (reply or ["", ""])[-1]
            if policy and policy != "noeviction":
                log.warning(
                    "Redis maxmemory-policy is %r: under memory pressure Redis may evict job keys, "
                    "and an evicted job is lost. Set maxmemory-policy noeviction.",
                    policy,
                )
                return

    async def _register(self) -> None:
        for operation in self._registration():
            await self.executor.run(operation)

    def _registration(self) -> list[Generator[ops.Step, Any, None]]:
        """The registry heartbeat as operations; also called from the heartbeat thread, which
        only reads the counters here."""
        now = int(time.time() * 1000)
        info = {
            "host": self._host,
            "pid": os.getpid(),
            "queues": ",".join(self.queues),
            "concurrency": self.config.concurrency,
            "started": getattr(self, "_started", now),
            "processed": self.processed,
            "failed": self.failed,
            "busy": self._busy,
        }
        self._started = info["started"]
        ttl = int(self.config.lease * 3000)
        return registry.heartbeat(
            workers_key(self.settings.prefix),
            worker_key(self.id, self.settings.prefix),
            self.id,
            info,
            ttl,
            now,
        )

    async def _with_retries(self, action: Any) -> Any:
        """Run ``action`` until Redis answers; a worker rides out a Redis restart instead of exiting."""
        delay = 0.05
        while True:
            try:
                return await action()
            except _RETRYABLE_REDIS as exc:
                if self._stopping:
                    raise
                log.warning("Redis unavailable (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    # ------------------------------------------------------------------ fetching
    async def _fetch_loop(self) -> None:
        concurrency = self.config.concurrency
        lease_ms = int(self.config.lease * 1000)
        max_block = self.config.sweep_interval
        failures = 0
        while not self._stopped_claiming:
            if self._alone:
                if self._holds_jobs() and not await self._room_no_longer_needed():
                    # Woken when a job finishes or is acknowledged; the timeout covers a lease
                    # lost at a heartbeat, which drops a held job without telling this loop.
                    self._slot_freed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._slot_freed.wait(), 1.0)
                    continue
                self._alone = False
            free = concurrency - self._busy
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                claimed_any = False
                wait_ms = -1
                order = self.queues
                if self._room_for is not None:
                    order = [self._room_for, *(q for q in self.queues if q != self._room_for)]
                    self._room_for = None
                for queue in order:
                    claim = await self.executor.run(self._claim(queue, free, lease_ms))
                    if claim.wait_ms >= 0:
                        wait_ms = claim.wait_ms if wait_ms < 0 else min(wait_ms, claim.wait_ms)
                    self._start_claimed(queue, claim)
                    if claim.jobs:
                        claimed_any = True
                        free -= len(claim.jobs)
                    if self._alone or free <= 0:
                        break
                failures = 0
                if claimed_any or self._alone:
                    continue
                if self.config.burst:
                    if self._busy == 0 and (wait_ms < 0 or wait_ms > max_block * 1000):
                        log.info("burst mode: queues drained")
                        self.stop()
                        return
                    if self._busy > 0:
                        self._slot_freed.clear()
                        await self._slot_freed.wait()
                        continue
                timeout = max_block if wait_ms < 0 else min(max_block, max(wait_ms, 1) / 1000)
                if len(self.queues) == 1:
                    # Block and claim in one go: the claim runs in Redis the moment work arrives.
                    queue = self.queues[0]
                    keys = self.keys[queue]
                    claim = await self.executor.run_after_block(
                        ("BZPOPMIN", keys.marker, timeout), self._claim(queue, free, lease_ms)
                    )
                    self._start_claimed(queue, claim)
                else:
                    await self._block(timeout)
            except _RETRYABLE_REDIS as exc:
                failures += 1
                delay = min(0.05 * 2**failures, 2.0)
                log.warning("claim failed (%s); retrying in %.2f s", exc, delay)
                await asyncio.sleep(delay)

    def _holds_jobs(self) -> bool:
        """True while any job is running here or waits for its acknowledgement."""
        return any(self._held.values())

    async def _room_no_longer_needed(self) -> bool:
        """True when this worker makes room for suspects and none waits any more (another
        worker took it): it goes back to claiming instead of draining for nothing."""
        if self._room_for is None:
            return False  # it runs a suspect itself
        try:
            waiting = await self.executor.run(ops.suspects_waiting(self.keys[self._room_for]))
        except _RETRYABLE_REDIS:
            return False
        if waiting:
            return False
        self._room_for = None
        return True

    def _claim(self, queue: str, free: int, lease_ms: int) -> Generator[ops.Step, Any, ops.Claim]:
        return ops.claim(
            self.keys[queue],
            free,
            lease_ms,
            self.id,
            self.config.failed,
            idle=not self._holds_jobs(),
            make_room_ms=int(self.config.make_room_after * 1000),
        )

    def _start_claimed(self, queue: str, claim: ops.Claim) -> None:
        if claim.alone:
            self._alone = True
            self._room_for = None if claim.jobs else queue
            if claim.jobs:
                log.warning("job %s/%s lost its worker before: running it alone", queue, claim.jobs[0].id)
        self._start_all(queue, claim.jobs)

    async def _block(self, timeout: float) -> None:
        """Wait in Redis until a marker says there is work, or ``timeout`` seconds pass."""
        markers = [self.keys[q].marker for q in self.queues]
        clustered = isinstance(self.transport, RedisPyAsyncTransport) and hasattr(
            self.transport.client, "nodes_manager"
        )
        if len(markers) == 1 or not clustered:
            await self.transport.call_blocking("BZPOPMIN", *markers, timeout)
            return
        # In a cluster the markers live in different slots: wait on each, first one wins.
        waits = [asyncio.ensure_future(self.transport.call_blocking("BZPOPMIN", m, timeout)) for m in markers]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
            # Let the cancelled commands drop their connections before we go on.
            await asyncio.gather(*waits, return_exceptions=True)

    # ------------------------------------------------------------------ running jobs
    def _start_all(self, queue: str, jobs: Sequence[ops.Claimed]) -> None:
        """Hold every claimed job before starting any: the heartbeat thread renews held jobs
        only, and starting one can take long when threads busy in pure Python hold the GIL
        (the pool starts a thread per sync job at first, and each start waits for the GIL:
        50 such threads kept the last of 50 claimed jobs from starting for about 8 s)."""
        held = self._held[queue]
        for claimed in jobs:
            held[claimed.id] = _Held(claimed.token)
        for claimed in jobs:
            self._start(queue, claimed)

    def _start(self, queue: str, claimed: ops.Claimed) -> None:
        if faults.ARMED:  # crash points for the reliability tests; off in production
            faults.reach("after_claim")
            faults.reach("in_promotion")
        held = self._held[queue][claimed.id] = _Held(claimed.token)
        try:
            job = prepare(queue, claimed, self.tasks)
        except Undeliverable as exc:
            log.error("job %s/%s cannot run: %s", queue, claimed.id, exc)
            payload = serialization.dumps({"type": exc.kind, "message": str(exc), "reason": exc.reason})
            self._record_failure(queue, claimed, payload, -1)
            return
        self._busy += 1
        job.started = self._loop.time()
        job.make_context = self._make_context_bound
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
            running = self._loop.create_task(
                self._run_sync(job, self._loop.run_in_executor(self._pool, call))
            )
        held.job = job
        held.task = running

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
            if job.aborted:
                self._finish_cancelled(job)
            else:
                self._finish_error(job, exc)
        else:
            if job.aborted:  # it ran to the end anyway; the abort still decides its outcome
                self._finish_cancelled(job)
            else:
                self._finish_ok(job, result)

    def _abort(self, queue: str, job_id: str) -> None:
        """Someone cancelled a running job: cancel an async task, flag a sync one."""
        held = self._held[queue].get(job_id)
        if held is None or held.task is None or held.job is None or held.job.aborted:
            return
        running, job = held.task, held.job
        job.aborted = True  # what current_job().cancelled reads
        if job.task.cancellable:
            running.cancel()
        log.warning("job %s/%s: cancelled while running; stopping it", queue, job_id)

    def _finish_cancelled(self, job: Prepared) -> None:
        self._release(job)
        payload = serialization.dumps(
            {"type": "Cancelled", "message": "cancelled while running", "reason": "cancelled", "by": "client"}
        )
        self._record_failure(job.queue, job.claimed, payload, ops.CANCELLED)
        _log_job(logging.WARNING, "cancelled", job, "cancelled")

    def _running_tasks(self) -> list[asyncio.Future[Any]]:
        return [h.task for held in self._held.values() for h in held.values() if h.task is not None]

    def _make_context(self, job: Prepared) -> JobContext:
        return JobContext(job, self._submitter(job.queue, job.claimed.id, job.claimed.token))

    def _submitter(self, queue: str, job_id: str, token: str) -> Any:
        keys = self.keys[queue]

        def send(kind: str, value: bytes | str) -> None:
            # Queued for the flush loop, which writes reports before results: a job's last
            # progress is recorded before the job is completed, never refused after it.
            self._acks.report(ops.report(keys, job_id, token, kind, value, MAX_LOG_LINES, LOG_KEEP_MS))

        return loop_submitter(self._loop, send)

    def _release(self, job: Prepared) -> None:
        self._busy -= 1
        held = self._held[job.queue].get(job.claimed.id)
        if held is not None:
            held.task = None
        self._slot_freed.set()

    def _finish_ok(self, job: Prepared, result: Any) -> None:
        self._release(job)
        if faults.ARMED:
            faults.reach("after_handler")
        try:
            payload = serialization.dumps(
                result, what=f"result of {job.task.name}", limit=self.settings.max_payload_bytes
            )
        except (SerializationError, ValueError) as exc:
            self._record_failure(job.queue, job.claimed, error_payload(exc, reason="bad_result"), -1)
            return
        self._acks.completed(job.queue, job.claimed.id, job.claimed.token, payload)
        self.processed += 1
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
        refund = 1 if isinstance(exc, RetryAfter) else 0
        if faults.ARMED and delay >= 0:
            faults.reach("in_retry")
        self._record_failure(job.queue, job.claimed, error_payload(exc, reason=reason), delay, refund)
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
        self, queue: str, claimed: ops.Claimed, payload: bytes, delay_ms: int, refund: int = 0
    ) -> None:
        self._acks.failed(queue, claimed.id, claimed.token, payload, delay_ms, refund)
        if delay_ms == ops.RETRY_NEVER:
            self.failed += 1

    def _settled(self, queue: str, job_ids: list[str]) -> None:
        """Redis took (or refused) these jobs' outcomes: they are no longer this worker's."""
        held = self._held[queue]
        for job_id in job_ids:
            held.pop(job_id, None)
        if self._alone and not self._holds_jobs():
            self._slot_freed.set()  # the fetch loop waits for this to claim again

    # ------------------------------------------------------------------ leases
    def _on_lease_answers(self, queue: str, lost: Answers, aborted: Answers) -> None:
        """What the heartbeat thread learnt, on the loop. Each answer names the attempt (token)
        it is about: the job may have finished, or been claimed again, since."""
        held = self._held[queue]
        for job_id, token in aborted:
            entry = held.get(job_id)
            if entry is not None and entry.token == token:
                self._abort(queue, job_id)
        for job_id, token in lost:
            entry = held.get(job_id)
            # A finished job waits for (or is in) its acknowledgement, which settles it and
            # says so if the result was discarded; the renewal may just have raced the ack.
            if entry is None or entry.token != token or entry.task is None:
                continue
            log.warning(
                "job %s/%s: lease lost (it was re-delivered); its result will be discarded", queue, job_id
            )
            del held[job_id]

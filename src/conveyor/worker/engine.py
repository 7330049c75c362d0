"""The worker: claims jobs in batches, runs many at once, acknowledges them in batches.

Four loops and the runner share one event loop, each in a module of its own, along the path
of a job:

* the *fetch* loop (:mod:`conveyor.worker.fetch`) claims jobs for the free slots, and blocks in
  Redis when there is nothing to do;
* the runner (:mod:`conveyor.worker.run`) runs each claimed job and records its outcome;
* the *flush* loop (:mod:`conveyor.worker.acks`) writes outcomes back in batches: whatever
  finished while the previous batch was in flight goes in the next one, so acknowledgements
  cost one round trip per batch, not per job;
* the *sweep* loop (:mod:`conveyor.worker.sweeper`) moves expired leases of dead workers back
  to waiting, and the *scheduler* loop (:mod:`conveyor.worker.scheduler`) fires schedules.

The leases of held jobs (:mod:`conveyor.worker.held`) are renewed from a thread of their own
(:mod:`conveyor.worker.heartbeat`), so that async jobs blocking the loop cannot starve the
renewals. This module starts and stops all of them, in the phases of
:mod:`conveyor.worker.phases`: ``STARTING``, ``RUNNING``, ``DRAINING`` (on ``stop()`` or the
first SIGTERM/SIGINT), ``STOPPING``, ``STOPPED``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import os
import random
import signal
import socket
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, NamedTuple, Unpack

from redis.exceptions import RedisError

from ..config import Settings
from ..errors import RETRYABLE_REDIS_ERRORS
from ..history.archiver import archive_until_closed
from ..hooks import Hooks
from ..metrics import redis_health
from ..metrics.processes import Export
from ..metrics.worker import WorkerMetrics
from ..ops import history as handoff_ops
from ..ops.keys import QueueKeys
from ..redis.base import AsyncTransport, SyncTransport
from ..redis.connect import as_async_transport, async_transport, sync_transport, sync_twin
from ..redis.executors import AsyncExecutor
from ..task import Tasks
from .acks import Acknowledger
from .fetch import Fetcher
from .heartbeat import Heartbeat
from .held import HeldJobs
from .outcome import Prepared
from .phases import Phase, Phases
from .registration import Registration
from .run import JobRunner
from .scheduler import run_schedulers
from .settings import WorkerOptions, WorkerSettings
from .sweeper import Sweeper

log = logging.getLogger("conveyor.worker")

HURRY = 0.2
"""Once a worker stops at once, how long a step that waits on Redis still gets -- writing the
outcomes of finished jobs, handing jobs back, leaving the registry -- before it is given up: a
stop at once must not wait out a Redis that does not answer. Four such steps stay under a
second (a healthy Redis answers each in a millisecond). What was not handed back returns
after its lease, as a dead worker's jobs do."""


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed, else asyncio's own (None)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _call(function: Callable[[], Any]) -> None:
    """A startup or shutdown function of the tasks, sync or async (see ``Tasks.on_startup``)."""
    if inspect.isawaitable(outcome := function()):
        await outcome


class _Loops(NamedTuple):
    """The worker's asyncio tasks, in the order they are stopped."""

    fetcher: asyncio.Task[None]
    flusher: asyncio.Task[None]
    sweeper: asyncio.Task[None]
    scheduler: asyncio.Task[None]


class Worker:
    """Runs the tasks of a :class:`~conveyor.Tasks` registry.

    ::

        Worker(tasks, url="redis://localhost:6379/0", concurrency=200).run()

    How it behaves comes from ``worker_settings`` (a :class:`WorkerSettings`), with any of its
    fields given as a keyword argument taking precedence (:class:`~conveyor.worker.settings.WorkerOptions`).
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
        **options: Unpack[WorkerOptions],
    ) -> None:
        self.tasks = tasks
        self.hooks = list(hooks)
        self.settings = settings or Settings.from_env(redis_url=url)
        self.config = replace(worker_settings or WorkerSettings(), **options)
        self.queues = list(queues or tasks.queues)
        self.keys = {q: QueueKeys(q, self.settings.prefix) for q in self.queues}
        self._connection = connection
        self._url = url
        self._host = socket.gethostname()
        self.id = f"{self._host}:{os.getpid()}:{random.randrange(16**4):04x}"
        self._held = HeldJobs(self.queues)
        self._phases = Phases()
        self._runner: JobRunner | None = None
        self.loop_failure: BaseException | None = None
        """The error that ended one of the worker's loops, if one did (the worker then stops)."""
        self._signals = 0
        self._hurry = asyncio.Event()
        """Set by a stop at once: whatever still waits on Redis is given up after ``HURRY`` s."""
        self._abandoned: list[Prepared] = []
        # What the STARTING phase got to, so that a stop that cuts it short closes just that.
        self._started_up = False
        self._connected = False
        self._registered = False
        self._pool: ThreadPoolExecutor | None = None
        self._archiver: asyncio.Task[None] | None = None
        self._history_url = self.config.history_url or self.settings.history_url
        self._beat_transport: SyncTransport | None = None
        self._heartbeat: Heartbeat | None = None
        self.metrics: WorkerMetrics | None = None
        """This process's figures, with ``metrics_port`` set; None: metrics off."""
        if self.config.metrics_port is not None:
            self.metrics = self._new_metrics()
        self._metrics_snapshot: str | None = None
        self._export: Export | None = None

    @property
    def processed(self) -> int:
        """Jobs this worker completed."""
        return self._runner.processed if self._runner is not None else 0

    @property
    def failed(self) -> int:
        """Jobs this worker failed for good."""
        return self._runner.failed if self._runner is not None else 0

    @property
    def abandoned(self) -> int:
        """Sync jobs handed back to waiting while their threads still ran: stopped at once, or
        out of ``shutdown_grace``. A thread cannot be stopped. It runs on until the function
        returns, with ``current_job().cancelled`` set and its outcome discarded, while the job
        may already run again elsewhere: only the end of the process ends it. So ``conveyor
        worker`` ends its process when this is not 0, at once and without waiting for the
        threads (which the interpreter would do at exit); an application that embeds the
        worker decides for itself."""
        return len(self._abandoned)

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """Where ``/metrics`` and ``/livez`` are served (host, port), while the worker serves
        them; None otherwise. The port is the one bound, also when ``metrics_port`` was 0."""
        return self._export.address if self._export is not None else None

    def snapshot_metrics_to(self, path: str) -> None:
        """Write this process's figures to the file ``path`` (JSON, every second and once more at
        exit) instead of serving them: how each process of ``conveyor worker --processes N``
        hands its figures to the supervisor, which serves their sum. Call before :meth:`run`."""
        if self.metrics is None:
            self.metrics = self._new_metrics()
        self._metrics_snapshot = path

    def _new_metrics(self) -> WorkerMetrics:
        return WorkerMetrics(
            self.queues,
            concurrency=self.config.concurrency,
            threads=self._threads(),
            lease=self.config.lease,
            max_loop_block=self._max_loop_block(),
        )

    def _threads(self) -> int:
        return self.config.threads or min(self.config.concurrency, 64)

    def _max_loop_block(self) -> float:
        return self.config.max_loop_block or max(10 * self.config.lease, 60.0)

    # ------------------------------------------------------------------ running
    def run(self) -> None:
        """Run until stopped by SIGTERM/SIGINT (or, in burst mode, until the queues are empty):
        the first signal stops gracefully, the next one at once (see :meth:`stop`). Returns
        once stopped, even if sync jobs it handed back still run (see :attr:`abandoned`)."""
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(self.serve(install_signal_handlers=True))

    async def serve(self, install_signal_handlers: bool = False) -> None:
        """Run in the current event loop until :meth:`stop` (or burst mode) ends it."""
        self._loop = asyncio.get_running_loop()
        if self.metrics is None:
            await self._serve(install_signal_handlers)
            return
        # From the start, so that /livez answers while the worker waits for Redis to register.
        export = Export(
            self.metrics, self.config.metrics_host, self.config.metrics_port or 0, self._metrics_snapshot
        )
        export.start(self._loop)
        self._export = export
        try:
            await self._serve(install_signal_handlers)
        finally:
            export.stop()
            self._export = None

    async def _serve(self, install_signal_handlers: bool) -> None:
        if install_signal_handlers:
            # First of all: a signal must stop the worker in every phase, also while it waits
            # for a Redis it cannot reach to register (it used to retry for ever, deaf to them).
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self._on_signal, sig)
        owns_client = self._connection is None
        runner = await self._started(owns_client)
        if runner is None:
            return
        loops = self._start_loops(runner)
        try:
            await self._phases.reached(Phase.DRAINING).wait()
        finally:
            await self._shut_down(loops, owns_client)
        if self.loop_failure is not None:
            raise self.loop_failure

    async def _started(self, owns_client: bool) -> JobRunner | None:
        """The ``STARTING`` phase, which a stop cuts short: the runner once started, or None
        if stopped first (what was opened meanwhile is closed again, nothing was claimed)."""
        starting = asyncio.create_task(self._start(owns_client), name="conveyor-start")
        stopped = asyncio.create_task(self._phases.reached(Phase.DRAINING).wait())
        try:
            await asyncio.wait([starting, stopped], return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when serve() itself is cancelled
            stopped.cancel()
            if not starting.done():
                starting.cancel()  # the step under way: a registration waiting for Redis, say
                await asyncio.wait([starting])
            if starting.cancelled() or starting.exception() is not None or starting.result() is None:
                await self._close_unstarted(owns_client)
        return None if starting.cancelled() else starting.result()

    async def _start(self, owns_client: bool) -> JobRunner | None:
        """Start step by step; None if a startup function stopped the worker."""
        for function in self.tasks.startup:
            await _call(function)
        self._started_up = True
        if self._phases.current >= Phase.DRAINING:
            return None  # stopped by a startup function: not even registered
        beat_transport = self._connect(owns_client)
        runner = self._assemble()
        log.info(
            "worker %s starting: queues=%s concurrency=%d tasks=%d",
            self.id,
            ",".join(self.queues),
            self.config.concurrency,
            len(self.tasks),
        )
        # A registration cancelled in flight may still be written; the entry expires after
        # three leases, as a dead worker's does.
        await self._with_retries(functools.partial(self._registration.register, self.executor))
        self._registered = True
        if self._history_url:
            # Before the first claim, so that every job this worker finishes is handed off;
            # the store itself is opened by the archiver, which may wait for the database.
            await self._with_retries(self._enable_history)
        await redis_health.warn_if_evicting(self.transport, log, timeout=2)
        await self._start_heartbeat(beat_transport, runner)
        return runner

    async def _close_unstarted(self, owns_client: bool) -> None:
        """Close what a start that was cut short (or failed) opened; no job was claimed."""
        self._hurry.set()  # nothing runs: no reason to wait on a Redis that does not answer
        self._phases.advance(Phase.STOPPING)
        await self._stop_heartbeat()
        await self._leave(owns_client)
        self._phases.advance(Phase.STOPPED)

    async def _enable_history(self) -> None:
        for keys in self.keys.values():
            await self.executor.run(handoff_ops.enable(keys))

    def _assemble(self) -> JobRunner:
        """The parts that run jobs, over the open transport: pool, acknowledger, runner, registry entry."""
        self._pool = pool = ThreadPoolExecutor(
            max_workers=self._threads(),
            thread_name_prefix="conveyor-job",
        )
        self._acks = Acknowledger(
            self.executor,
            self.keys,
            completed=self.config.completed,
            failed=self.config.failed,
            settled=self._held.settled,
            metrics=self.metrics,
        )
        self._runner = JobRunner(
            tasks=self.tasks,
            hooks=self.hooks,
            keys=self.keys,
            held=self._held,
            acks=self._acks,
            loop=self._loop,
            pool=pool,
            max_payload_bytes=self.settings.max_payload_bytes,
            metrics=self.metrics,
        )
        self._registration = Registration(
            worker_id=self.id,
            host=self._host,
            queues=self.queues,
            concurrency=self.config.concurrency,
            lease=self.config.lease,
            prefix=self.settings.prefix,
            runner=self._runner,
        )
        return self._runner

    def _connect(self, owns_client: bool) -> SyncTransport:
        """Make the worker's transport and executor; returns the heartbeat thread's own transport."""
        wait = self.settings.cluster_wait_ms / 1000
        self.transport = (
            async_transport(self.settings.redis_url, wait)
            if owns_client
            else as_async_transport(self._connection, wait)
        )
        self.executor = AsyncExecutor(self.transport)
        self._connected = True
        # Its own connection, so a blocked loop cannot starve it; derived before anything runs.
        # A beat must not wait out a cluster refusal, a silent connection (half-open, a
        # blackhole) or a connect for longer than its interval: leases would lapse meanwhile,
        # while failing fast tries again at once over a new connection. (A half-open
        # connection cost a running job its 1.5 s lease with the URL's 5 s socket timeout.)
        beat_wait = min(wait, self.config.lease / 3)
        if owns_client:
            beat = sync_transport(self.settings.redis_url, beat_wait, timeout=self.config.lease / 3)
        else:
            beat = sync_twin(self.transport, self._url, beat_wait, timeout=self.config.lease / 3)
        self._beat_transport = beat
        return beat

    async def _start_heartbeat(self, transport: SyncTransport, runner: JobRunner) -> None:
        self._heartbeat = heartbeat = Heartbeat(
            transport,
            self._loop,
            self._held.by_queue,
            self.keys,
            lease=self.config.lease,
            max_loop_block=self._max_loop_block(),
            registration=self._registration.operations,
            on_answers=runner.on_lease_answers,
            on_failure=self._on_heartbeat_failure,
            figures=None if self.metrics is None else self.metrics.beat,
        )
        await heartbeat.start()

    def _start_loops(self, runner: JobRunner) -> _Loops:
        fetcher = Fetcher(
            worker_id=self.id,
            executor=self.executor,
            transport=self.transport,
            keys=self.keys,
            queues=self.queues,
            config=self.config,
            runner=runner,
            held=self._held,
            written=self._acks.written,
            phases=self._phases,
            stop=self.stop,
        )
        stopping = self._phases.reached(Phase.STOPPING)
        sweeper = Sweeper(
            self.executor,
            self.keys,
            interval=self.config.sweep_interval,
            lease=self.config.lease,
            max_crashes=self.config.max_crashes,
            failed=self.config.failed,
            alone_after=self.config.alone_after,
            closing=stopping,
        )
        schedules = run_schedulers(self.executor, list(self.keys.values()), stopping, self.tasks.schedules())
        if self._history_url:
            self._archiver = asyncio.create_task(
                archive_until_closed(
                    self.executor, self.keys, self._history_url, stopping, final_drain=self.config.burst
                ),
                name="conveyor-archive",
            )
        self._phases.advance(Phase.RUNNING)
        loops = _Loops(
            asyncio.create_task(fetcher.run(), name="conveyor-fetch"),
            asyncio.create_task(self._acks.run(), name="conveyor-flush"),
            asyncio.create_task(sweeper.run(), name="conveyor-sweep"),
            asyncio.create_task(schedules, name="conveyor-scheduler"),
        )
        for loop_task in loops:
            loop_task.add_done_callback(self._on_loop_end)
        return loops

    async def _shut_down(self, loops: _Loops, owns_client: bool) -> None:
        """Stop in the order of :mod:`conveyor.worker.phases`: claiming, the running jobs and
        their outcomes, then the other loops, the heartbeat and what the worker holds."""
        self._phases.advance(Phase.DRAINING)  # also when serve() was cancelled rather than stopped
        loops.fetcher.cancel()
        await self._finish(loops.fetcher)
        await self._drain_running()
        self._acks.finish()
        # Outcomes are kept until Redis takes them, however long it is away -- unless the
        # worker stops at once: then what was not written is handed back with the rest.
        await self._finish(loops.flusher)
        self._phases.advance(Phase.STOPPING)
        # Not cancelled mid-command: redis-py's cluster client does not always survive that.
        background = [self._finish(loops.sweeper, 5), self._finish(loops.scheduler, 5)]
        if self._archiver is not None:  # it finishes the batch it is writing, if it can
            background.append(self._finish(self._archiver, 5))
        await asyncio.gather(*background)
        await self._stop_heartbeat()  # leases are renewed until every job finished or was flushed
        await self._leave(owns_client)
        self._phases.advance(Phase.STOPPED)

    async def _stop_heartbeat(self) -> None:
        heartbeat = self._heartbeat
        if heartbeat is not None and heartbeat.thread.ident is not None:
            # The thread closes its own connection. Stuck in a call to a Redis that does not
            # answer, it is not waited for long once stopping at once (a daemon thread).
            if self._hurry.is_set():
                await heartbeat.stop(HURRY)
            else:
                await heartbeat.stop()
        elif self._beat_transport is not None:  # never started: its connection is ours to close
            with contextlib.suppress(Exception):
                self._beat_transport.close()

    async def _leave(self, owns_client: bool) -> None:
        """The jobs still held handed back, out of the registry, the shutdown functions, the
        pool and the connection closed."""
        if not self._abandoned:
            await self._hand_back()
        if self._registered:
            await self._finish(self._logged(self._unregister()))
        if self._started_up:
            for function in reversed(self.tasks.shutdown):
                try:
                    await _call(function)
                except Exception:
                    log.exception("shutdown function %s failed", getattr(function, "__qualname__", function))
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self._abandoned:
            # Last: a job handed back may start elsewhere at once, while its thread here runs
            # until this process ends (see `abandoned`), which should follow right away.
            await self._hand_back()
        if owns_client and self._connected:
            await self.transport.aclose()
        log.info("worker %s stopped: %d completed, %d failed", self.id, self.processed, self.failed)

    async def _hand_back(self) -> None:
        """The jobs still held back to waiting, at once rather than after their leases."""
        if not self._connected:
            return  # nothing was claimed
        if not await self._finish(self._logged(self._held.hand_back(self.executor, self.keys))):
            log.error("could not hand the unfinished jobs back in time; they return after their lease")

    async def _unregister(self) -> None:
        with contextlib.suppress(RedisError):  # the entry expires by itself
            await self._registration.unregister(self.executor)

    @staticmethod
    async def _logged(work: Awaitable[None]) -> None:
        """``work``, its error logged: one step of stopping that fails must not end the rest."""
        try:
            await work
        except Exception:
            log.exception("stopping the worker: a step failed")

    async def _finish(self, work: Awaitable[Any], limit: float | None = None) -> bool:
        """Wait for ``work`` to end, for ``limit`` seconds at most (None: no limit) and, once
        the worker stops at once, for ``HURRY`` seconds more at most; then cancel it. True if
        it ended by itself. Its error, if any, is for ``work`` to report (the loops' callback
        does, see ``_on_loop_end``)."""
        task = asyncio.ensure_future(work)
        hurry = asyncio.ensure_future(self._hurry.wait())
        try:
            await asyncio.wait([task, hurry], timeout=limit, return_when=asyncio.FIRST_COMPLETED)
            if not task.done() and hurry.done():
                await asyncio.wait([task], timeout=HURRY)
        finally:
            hurry.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=HURRY)
            return False
        if not task.cancelled():
            task.exception()  # reported already: see above
        return True

    # ------------------------------------------------------------------ stopping
    def stop(self, at_once: bool = False) -> None:
        """Stop claiming; running jobs get ``shutdown_grace`` seconds to finish, then are handed
        back to waiting. While the worker starts, it stops at once (it has claimed nothing).

        ``at_once``: hand the running jobs back now, and give up on a Redis that does not
        answer after ``HURRY`` seconds per step. An async job is cancelled; a sync job's thread
        cannot be: see :attr:`abandoned`. What a second SIGTERM/SIGINT does."""
        self._phases.advance(Phase.DRAINING)
        if at_once and not self._hurry.is_set():
            self._hurry.set()
            self._cancel_running()

    def _cancel_running(self) -> None:
        """Cancel the running jobs, which are then handed back. A sync job is flagged
        (``current_job().cancelled``) and abandoned to its thread."""
        for held in self._held.by_queue.values():
            for entry in held.values():
                # Only a job that will see the cancellation: a finished one is recorded as such.
                if entry.task is None or not entry.task.cancel():
                    continue
                job = entry.job
                if job is not None and not job.task.cancellable:
                    job.aborted = True
                    self._abandoned.append(job)

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

    def _on_signal(self, sig: int) -> None:
        # Counted, not read from the phase: after a stop() from code, the first signal still
        # only logs and stops gracefully; only a second signal cancels the running jobs.
        self._signals += 1
        name = signal.Signals(sig).name
        if self._signals == 1 and self._phases.current is Phase.STARTING:
            log.info("received %s while starting: stopping", name)
            self.stop()
        elif self._signals == 1:
            log.info(
                "received %s: finishing running jobs (grace %.0f s); send again to stop at once",
                name,
                self.config.shutdown_grace,
            )
            self.stop()
        else:
            log.warning("received %s again: stopping at once, handing running jobs back", name)
            self.stop(at_once=True)

    async def _drain_running(self) -> None:
        running = self._held.running()
        if not running:
            return
        _, pending = await asyncio.wait(running, timeout=self.config.shutdown_grace)
        if pending:
            log.warning(
                "%d jobs still running after the grace period; handing them back to waiting", len(pending)
            )
            self._cancel_running()
            await asyncio.wait(pending, timeout=1.0)

    # ------------------------------------------------------------------ checks
    async def _with_retries(self, action: Any) -> Any:
        """Run ``action`` until Redis answers; a worker rides out a Redis restart instead of
        exiting. Only while starting, which a stop cancels (see ``_started``)."""
        delay = 0.05
        while True:
            try:
                return await action()
            except RETRYABLE_REDIS_ERRORS as exc:
                log.warning("Redis unavailable (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

"""Producers: enqueue jobs, read them back and manage queues, from sync or async code.

:class:`Client` and :class:`AsyncClient` share everything but I/O: both build the same
operations (:mod:`conveyor.ops`) and hand them to their executor. Each public
method is therefore a one-line wrapper on each face. A job's arguments and options are
encoded by :mod:`conveyor.ops.encode`; the handles an enqueue returns are
:mod:`conveyor.handles`'.

The client is all the HTTP API (:mod:`conveyor.api`) knows of Redis: what the API needs,
a range of a job's log, the newest event's position, a readiness check, is a method here.
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import time
from collections.abc import AsyncIterator, Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from operator import attrgetter
from typing import TYPE_CHECKING, Any, TypeVar

from . import ops, tracing
from .config import Settings
from .errors import ConfigurationError, JobNotFound, ResultTimeout
from .flows import Flow, FlowHandle
from .handles import AsyncJobHandle, JobHandle
from .job import EnqueueOutcome, Job, JobState
from .ops import flows as flow_ops
from .ops import schedules
from .ops.encode import encode_job
from .ops.ids import new_job_ids
from .ops.keys import QueueKeys, queues_key, validate_queue_name, workers_key
from .ops.manage import UNSET, Unset, set_limits
from .ops.scripts import LuaScript, load, names
from .redis.base import AsyncTransport, SyncTransport
from .redis.connect import as_async_transport, as_sync_transport, async_transport, sync_transport
from .redis.executors import AsyncExecutor, SyncExecutor
from .schedules import Schedule, ScheduleState
from .task import P, R, Task, TaskCall

if TYPE_CHECKING:
    from .history.store import HistoryStore
    from .history.sync import SyncHistory

__all__ = ["UNSET", "AsyncClient", "AsyncJobHandle", "Client", "JobHandle", "Unset"]

T = TypeVar("T")


_outcome = attrgetter("outcome")
CANCELLED_RETENTION = ops.Retention(100_000, 7 * 24 * 3600 * 1000)

BULK_CHUNK = 250
"""Jobs per enqueue script call in a bulk enqueue. The chunks go out pipelined, each as soon
as it is built, so Redis writes one chunk while the next is prepared: smaller chunks overlap
more of the two, larger ones pay the script's fixed cost (about 10 us) less often. No call
holds Redis for more than about 1.5 ms."""


def _with_ids(jobs: list[ops.NewJob]) -> list[ops.NewJob]:
    """Give a generated id to each job of a chunk that has none (the caller chose no job_id).

    Done chunk by chunk as the chunks are sent, so making the ids of the next chunk
    overlaps with Redis writing this one.
    """
    missing = [job for job in jobs if not job.id]
    for job, job_id in zip(missing, new_job_ids(len(missing)), strict=True):
        job.id = job_id
    return jobs


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Hold off the cyclic garbage collector while a bulk makes its thousands of small objects.

    Each of them counts towards the collector's next run, so encoding 1,000 jobs triggered
    several collections, and now and then a full one over every object of the process:
    about a fifth of a bulk enqueue's CPU time, for no garbage (none of them forms a cycle;
    reference counting frees them). Paused only when it was running, so concurrent bulks
    and an application that turned it off leave it as they found it.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class _Producer:
    """What both faces share: settings, key names and the building of operations."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._keys: dict[str, QueueKeys] = {}
        self._known_queues: set[str] = set()
        tracing.from_env()  # CONVEYOR_TRACING=1 turns tracing on for the process

    def keys(self, queue: str) -> QueueKeys:
        keys = self._keys.get(queue)
        if keys is None:
            keys = self._keys[queue] = QueueKeys(validate_queue_name(queue), self.settings.prefix)
        return keys

    def _encode(self, call: TaskCall[Any], job_id: str) -> ops.NewJob:
        """The encoder a flow's plan is given; an enqueue calls ``encode_job`` itself, one
        layer fewer per job of a bulk."""
        return encode_job(call, job_id, self.settings.max_payload_bytes)

    def _enqueue_ops(self, calls: Sequence[TaskCall[Any]]) -> Generator[ops.Step, Any, list[ops.Enqueued]]:
        """The enqueue of ``calls``; while tracing is on, in a producer span whose context
        each job carries (see :mod:`conveyor.tracing`)."""
        if tracing.active is None:
            return self._enqueue_calls(calls)
        return tracing.active.enqueue(calls, self._enqueue_calls)

    def _enqueue_calls(self, calls: Sequence[TaskCall[Any]]) -> Generator[ops.Step, Any, list[ops.Enqueued]]:
        results = yield from self._write_calls(calls)
        # A generated id can already exist for two reasons. If that job has the same task and
        # arguments, it is this enqueue's own: a retry below us (redis-py re-sends a command
        # whose reply was lost) ran the script twice, and the job was created once. Otherwise
        # it belongs to another producer's job (same millisecond, counter and 20 random
        # bits: rare, yet bound to happen in a large fleet); the caller did not choose that
        # id, so make the job under a new one rather than report "existed" and drop it.
        while True:
            if EnqueueOutcome.EXISTED not in set(map(_outcome, results)):
                return results  # the common case, checked without a Python loop over the jobs
            clashes = []
            for i, (call, result) in enumerate(zip(calls, results, strict=True)):
                if result.outcome is EnqueueOutcome.EXISTED and call.options.job_id is None:
                    if result.identical:
                        results[i] = ops.Enqueued(result.id, result.queue, EnqueueOutcome.CREATED)
                    else:
                        clashes.append(i)
            if not clashes:
                return results
            again = yield from self._write_calls([calls[i] for i in clashes])
            for i, result in zip(clashes, again, strict=True):
                results[i] = result

    def _write_calls(self, calls: Sequence[TaskCall[Any]]) -> Generator[ops.Step, Any, list[ops.Enqueued]]:
        """Encode everything and check every queue name first, then register, then write: a
        call that is refused writes nothing, not even its queue's name."""
        if len(calls) == 1:  # the single enqueue: no grouping needed
            call = calls[0]
            job = encode_job(call, new_job_ids(1)[0], self.settings.max_payload_bytes)
            keys = self.keys(call.queue)
            if call.queue not in self._known_queues:
                yield from self._register(call.queue)
            return (yield from ops.enqueue(keys, [job]))
        by_queue: dict[str, list[ops.NewJob]] = {}
        limit = self.settings.max_payload_bytes
        for call in calls:  # the id is given when its chunk is sent
            by_queue.setdefault(call.queue, []).append(encode_job(call, "", limit))
        queue_keys = {queue: self.keys(queue) for queue in by_queue}
        for queue in by_queue:
            yield from self._register(queue)
        written = yield from ops.enqueue_chunks(
            (queue_keys[queue], _with_ids(jobs[start : start + BULK_CHUNK]))
            for queue, jobs in by_queue.items()
            for start in range(0, len(jobs), BULK_CHUNK)
        )
        results: dict[str, list[ops.Enqueued]] = {}
        for outcomes in written:
            results.setdefault(outcomes[0].queue, []).extend(outcomes)
        if len(results) == 1:
            return results[calls[0].queue]
        # Several queues: each call's outcome is the next one of its queue's, in call order.
        per_queue = {queue: iter(outcomes) for queue, outcomes in results.items()}
        return [next(per_queue[call.queue]) for call in calls]

    def _flows_op(
        self, flows: Sequence[Flow]
    ) -> Generator[ops.Step, Any, tuple[flow_ops.FlowPlan, list[ops.Enqueued]]]:
        fresh = iter(new_job_ids(sum(flow_ops.size(flow) for flow in flows)))
        plan = flow_ops.plan_flows(flows, fresh, self._encode)
        queues = list(dict.fromkeys(queue for queue, _ in plan.nodes))
        for queue in queues:  # a call made by hand (``TaskCall(...)``) skipped the check
            self.keys(queue)
        for queue in queues:
            yield from self._register(queue)
        results = yield from flow_ops.write_flows(self.settings.prefix, plan)
        return plan, results

    def _register(self, queue: str) -> Generator[ops.Step, Any, None]:
        """Record the queue name once per client, for ``conveyor info`` (outside the queue's slot).

        Called once the jobs were encoded and their queue names checked, so input that is
        refused registers nothing; and before the write, so a queue that holds jobs is always
        listed. Not after it: a refused SADD (OOM) would then report a written job as not
        written, and a producer dying between the two would leave jobs in an unlisted queue.
        A write that fails after the SADD leaves an empty queue listed, as one emptied does.
        """
        if queue not in self._known_queues:
            yield from ops.register_queue(queues_key(self.settings.prefix), queue)
            self._known_queues.add(queue)

    def _wait_op(self, queue: str, job_id: str, timeout: float | None) -> Generator[ops.Step, Any, Any]:
        result = yield from ops.wait_result(self.keys(queue), job_id, timeout)
        if result is ops.TIMEOUT:
            raise ResultTimeout(
                f"job {job_id} did not finish within {timeout} s; it is still queued or running"
            )
        return result

    def _cancel_op(
        self, queue: str, job_id: str, reason: str, by: str | None
    ) -> Generator[ops.Step, Any, str]:
        who = by or f"{socket.gethostname()}:{os.getpid()}"
        return ops.cancel(self.keys(queue), job_id, who, reason, CANCELLED_RETENTION)

    def _require(self, job: Job | None, queue: str, job_id: str) -> Job:
        if job is None:
            raise JobNotFound(f"no job {job_id} in queue {queue!r}")
        return job

    @staticmethod
    def _scripts() -> list[LuaScript]:
        return [load(name) for name in names()]

    @staticmethod
    def _unloaded(scripts: Sequence[LuaScript], replies: Sequence[Sequence[Any]]) -> list[LuaScript]:
        """The scripts that some primary lacks (``SCRIPT EXISTS`` replies, one per primary)."""
        return [
            script for script, *loaded in zip(scripts, *replies, strict=True) if not all(map(int, loaded))
        ]


def _history_url(settings: Settings) -> str:
    if not settings.history_url:
        raise ConfigurationError(
            "no history store named: set CONVEYOR_HISTORY_URL (sqlite:///path/history.db or "
            "postgresql://user@host/db), or pass history_url= to the client"
        )
    return settings.history_url


class Client(_Producer):
    """Synchronous producer and manager. Thread-safe (the transport pools connections).

    ::

        client = Client.from_url("redis://localhost:6379/0")
        handle = client.enqueue(add, 1, 2)
        print(handle.result(timeout=10))
    """

    def __init__(self, connection: SyncTransport | Any, settings: Settings | None = None) -> None:
        """``connection``: a transport, or a redis-py client made with ``decode_responses=True``."""
        super().__init__(settings or Settings.from_env())
        self.transport = as_sync_transport(connection, self.settings.cluster_wait_ms / 1000)
        self._executor = SyncExecutor(self.transport)
        self._history: SyncHistory | None = None

    @classmethod
    def from_url(cls, url: str | None = None, **settings: Any) -> Client:
        """A client for ``url``; settings from ``settings``, then the environment, then defaults."""
        return cls.from_settings(Settings.from_env(redis_url=url, **settings))

    @classmethod
    def from_settings(cls, settings: Settings) -> Client:
        """A client for ``settings.redis_url``, with exactly these settings."""
        return cls(sync_transport(settings.redis_url, settings.cluster_wait_ms / 1000), settings)

    def close(self) -> None:
        if self._history is not None:
            self._history.close()
        self.transport.close()

    @property
    def history(self) -> SyncHistory:
        """The history of finished jobs (``settings.history_url``, ``CONVEYOR_HISTORY_URL``),
        opened on first use and closed with the client: ``client.history.search(SearchQuery(task=...))``,
        ``client.history.get(queue, job_id)``."""
        if self._history is None:
            from .history.sync import SyncHistory

            self._history = SyncHistory(_history_url(self.settings))
        return self._history

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, operation: Generator[ops.Step, Any, T]) -> T:
        return self._executor.run(operation)

    # producing
    def enqueue(self, task: Task[P, R], /, *args: P.args, **kwargs: P.kwargs) -> JobHandle[R]:
        """Enqueue one job of ``task``; options come from ``task.with_options(...)``."""
        [enqueued] = self._write(self._enqueue_ops([task.call(*args, **kwargs)]))
        return JobHandle(self, enqueued)

    def enqueue_many(self, calls: Iterable[TaskCall[R]]) -> list[JobHandle[R]]:
        """Enqueue many jobs (``[add.call(i, i) for i in ...]``) in one round trip per queue.

        Python's cyclic garbage collector is held off for the duration of the call (it would
        otherwise take about a fifth of its time, collecting nothing) and resumed after.
        """
        with _gc_paused():
            return [JobHandle(self, e) for e in self._write(self._enqueue_ops(list(calls)))]

    def _write(self, operation: Generator[ops.Step, Any, list[ops.Enqueued]]) -> list[ops.Enqueued]:
        """Run an enqueue; with ``durable_replicas``, on one connection and followed by WAIT."""
        replicas = self.settings.durable_replicas
        if not replicas:
            return self.run(operation)
        with self.transport.pinned() as pinned:
            executor = SyncExecutor(pinned)
            enqueued = executor.run(operation)
            executor.run(ops.wait_replicas(enqueued, replicas, self.settings.durable_timeout_ms))
        return enqueued

    def enqueue_flow(self, flow: Flow) -> FlowHandle[JobHandle[Any]]:
        """Enqueue a parent job that runs after its children (see :mod:`conveyor.flows`).

        All jobs of the flow are created together or not at all (one script call when they
        share a queue); the parent waits in ``waiting_children`` until every child finished.
        """
        return self.enqueue_flows([flow])[0]

    def enqueue_flows(self, flows: Iterable[Flow]) -> list[FlowHandle[JobHandle[Any]]]:
        """Enqueue many flows in one round trip per queue."""
        plan, results = self.run(self._flows_op(list(flows)))
        return plan.handles(results, lambda enqueued: JobHandle(self, enqueued))

    # reading
    def get_job(self, queue: str, job_id: str) -> Job:
        return self._require(self.run(ops.get_job(self.keys(queue), job_id)), queue, job_id)

    def wait_result(self, queue: str, job_id: str, timeout: float | None = None) -> Any:
        return self.run(self._wait_op(queue, job_id, timeout))

    def counts(self, queue: str) -> dict[str, int]:
        return self.run(ops.counts(self.keys(queue)))

    def figures(self, queue: str, minutes: int = 60) -> ops.QueueFigures:
        """The queue's state and what the fleet did with it: rates, wait and run times
        (see :mod:`conveyor.ops.metrics`), with the last ``minutes`` minutes."""
        return self.run(ops.figures(self.keys(queue), minutes))

    def list_jobs(
        self, queue: str, state: JobState | str, offset: int = 0, limit: int = 50
    ) -> tuple[list[Job], int]:
        return self.run(ops.list_jobs(self.keys(queue), JobState(state), offset, limit))

    def queues(self) -> list[str]:
        return self.run(ops.list_queues(queues_key(self.settings.prefix)))

    def workers(self) -> list[dict[str, Any]]:
        from .ops.workers import list_workers

        return self.run(list_workers(workers_key(self.settings.prefix), self.settings.prefix))

    # managing
    def retry(self, queue: str, job_ids: Sequence[str] | None = None) -> int:
        """Move dead-lettered jobs back to waiting: the given ones, or all of them."""
        if job_ids is not None:
            return self.run(ops.retry_failed(self.keys(queue), job_ids))
        total = 0
        while moved := self.run(ops.retry_failed(self.keys(queue), None)):
            total += moved
        return total

    def remove(self, queue: str, job_id: str) -> JobState:
        return self.run(ops.remove(self.keys(queue), job_id))

    def purge(
        self, queue: str, states: Sequence[JobState | str] = (JobState.WAITING, JobState.DELAYED)
    ) -> int:
        return self.run(ops.purge(self.keys(queue), [JobState(s) for s in states]))

    def cancel(
        self, queue: str, job_id: str, reason: str = "cancelled by request", by: str | None = None
    ) -> str:
        """Cancel a waiting or delayed job (``"cancelled"``), or abort a running one (``"aborting"``).

        A running async job is cancelled at its worker's next heartbeat (within a third of
        the lease); a running sync job sees ``current_job().cancelled`` become true.
        """
        return self.run(self._cancel_op(queue, job_id, reason, by))

    def job_logs(self, queue: str, job_id: str, start: int = 0, end: int = -1) -> list[str]:
        """The log lines a job wrote with ``current_job().log(...)``, oldest first: lines
        ``start`` to ``end`` included, negative ones counted from the newest (``-100``)."""
        return self.run(ops.job_logs(self.keys(queue), job_id, start, end))

    def add_schedule(self, schedule: Schedule) -> bool:
        """Add or replace a repeatable job; returns True when it was new or changed."""
        return self.run(schedules.upsert(self.keys(schedule.queue), schedule, int(time.time() * 1000)))

    def remove_schedule(self, queue: str, name: str) -> bool:
        return self.run(schedules.remove(self.keys(queue), name))

    def schedules(self, queue: str) -> list[ScheduleState]:
        """The queue's repeatable jobs with their next run times."""
        return self.run(schedules.list_all(self.keys(queue)))

    def read_events(
        self, queue: str, after: str = "0-0", count: int = 1000, block: float | None = None
    ) -> tuple[list[ops.Event], str]:
        """One read of the queue's event stream: events after ``after`` and the new position."""
        block_ms = None if block is None else max(1, int(block * 1000))
        return self.run(ops.read_events(self.keys(queue), after, count, block_ms))

    def events(self, queue: str, after: str = "$") -> Iterator[ops.Event]:
        """Follow the queue's lifecycle events as they happen (blocks in Redis between them)."""
        if after == "$":  # pinned once: a read from "$" that got nothing would answer "$" again,
            after = self.last_event_id(queue)  # and events between two reads would be missed
        while True:
            batch, after = self.read_events(queue, after, block=5.0)
            yield from batch

    def last_event_id(self, queue: str) -> str:
        """The position of the queue's newest event (``"0-0"``: none): ``"$"`` pinned to now,
        so that reads from it miss nothing that happens between them."""
        return self.run(ops.last_event_id(self.keys(queue)))

    def load_scripts(self) -> int:
        """Load the Lua scripts Redis lacks (after a restart or ``SCRIPT FLUSH``), on every
        primary of a cluster; returns how many were missing. Never needed (a missing script is
        loaded when first called), but it proves Redis answers: the API's readiness probe."""
        scripts = self._scripts()
        missing = self._unloaded(
            scripts, self.transport.call_on_primaries("SCRIPT", "EXISTS", *(s.sha for s in scripts))
        )
        for script in missing:
            self.transport.load_script(script.source)
        return len(missing)

    def pause(self, queue: str) -> None:
        """Workers stop claiming from the queue; enqueues go on."""
        self.run(ops.update_settings(self.keys(queue), {"paused": 1}))

    def resume(self, queue: str) -> None:
        self.run(ops.update_settings(self.keys(queue), {"paused": None}))

    def set_limits(
        self,
        queue: str,
        *,
        concurrency: int | Unset | None = UNSET,
        rate: tuple[int, float] | Unset | None = UNSET,
        group_concurrency: int | Unset | None = UNSET,
        group_rate: tuple[int, float] | Unset | None = UNSET,
        priority_aging: float | Unset | None = UNSET,
    ) -> None:
        """Limits across all workers: at most ``concurrency`` active jobs, at most ``rate[0]``
        jobs started per ``rate[1]`` seconds; and the same for each group key on its own
        (``group_concurrency``, ``group_rate``). ``priority_aging``: a waiting job gains one
        priority level per that many seconds, so low priorities cannot starve forever.
        ``None`` removes a setting; omitted leaves it."""
        self.run(
            set_limits(self.keys(queue), concurrency, rate, group_concurrency, group_rate, priority_aging)
        )

    def settings_of(self, queue: str) -> dict[str, int]:
        return self.run(ops.get_settings(self.keys(queue)))

    def promote(self, queue: str, job_id: str) -> str:
        """Run a delayed job now (skipping its delay or retry backoff); returns ``"waiting"``.

        Raises ``JobNotFound``, or ``InvalidState`` when the job is not delayed.
        """
        return self.run(ops.promote(self.keys(queue), job_id))


class AsyncClient(_Producer):
    """The asyncio twin of :class:`Client`, with the same methods as coroutines."""

    def __init__(self, connection: AsyncTransport | Any, settings: Settings | None = None) -> None:
        super().__init__(settings or Settings.from_env())
        self.transport = as_async_transport(connection, self.settings.cluster_wait_ms / 1000)
        self._executor = AsyncExecutor(self.transport)
        self._history: HistoryStore | None = None
        self._history_lock = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str | None = None, **settings: Any) -> AsyncClient:
        return cls.from_settings(Settings.from_env(redis_url=url, **settings))

    @classmethod
    def from_settings(cls, settings: Settings) -> AsyncClient:
        return cls(async_transport(settings.redis_url, settings.cluster_wait_ms / 1000), settings)

    async def close(self) -> None:
        if self._history is not None:
            await self._history.close()
        await self.transport.aclose()

    async def history(self) -> HistoryStore:
        """The history of finished jobs (``settings.history_url``, ``CONVEYOR_HISTORY_URL``),
        opened on first use and closed with the client:
        ``await (await client.history()).search(SearchQuery(task=...))``."""
        async with self._history_lock:
            if self._history is None:
                from .history.store import open_store

                self._history = await open_store(_history_url(self.settings))
        return self._history

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def run(self, operation: Generator[ops.Step, Any, T]) -> T:
        return await self._executor.run(operation)

    async def enqueue(self, task: Task[P, R], /, *args: P.args, **kwargs: P.kwargs) -> AsyncJobHandle[R]:
        [enqueued] = await self._write(self._enqueue_ops([task.call(*args, **kwargs)]))
        return AsyncJobHandle(self, enqueued)

    async def enqueue_many(self, calls: Iterable[TaskCall[R]]) -> list[AsyncJobHandle[R]]:
        with _gc_paused():  # other tasks run meanwhile without it too: a few ms per 1,000 jobs
            return [AsyncJobHandle(self, e) for e in await self._write(self._enqueue_ops(list(calls)))]

    async def _write(self, operation: Generator[ops.Step, Any, list[ops.Enqueued]]) -> list[ops.Enqueued]:
        replicas = self.settings.durable_replicas
        if not replicas:
            return await self.run(operation)
        async with self.transport.pinned() as pinned:
            executor = AsyncExecutor(pinned)
            enqueued = await executor.run(operation)
            await executor.run(ops.wait_replicas(enqueued, replicas, self.settings.durable_timeout_ms))
        return enqueued

    async def enqueue_flow(self, flow: Flow) -> FlowHandle[AsyncJobHandle[Any]]:
        return (await self.enqueue_flows([flow]))[0]

    async def enqueue_flows(self, flows: Iterable[Flow]) -> list[FlowHandle[AsyncJobHandle[Any]]]:
        plan, results = await self.run(self._flows_op(list(flows)))
        return plan.handles(results, lambda enqueued: AsyncJobHandle(self, enqueued))

    async def get_job(self, queue: str, job_id: str) -> Job:
        return self._require(await self.run(ops.get_job(self.keys(queue), job_id)), queue, job_id)

    async def wait_result(self, queue: str, job_id: str, timeout: float | None = None) -> Any:
        return await self.run(self._wait_op(queue, job_id, timeout))

    async def counts(self, queue: str) -> dict[str, int]:
        return await self.run(ops.counts(self.keys(queue)))

    async def figures(self, queue: str, minutes: int = 60) -> ops.QueueFigures:
        """As :meth:`Client.figures`."""
        return await self.run(ops.figures(self.keys(queue), minutes))

    async def list_jobs(
        self, queue: str, state: JobState | str, offset: int = 0, limit: int = 50
    ) -> tuple[list[Job], int]:
        return await self.run(ops.list_jobs(self.keys(queue), JobState(state), offset, limit))

    async def queues(self) -> list[str]:
        return await self.run(ops.list_queues(queues_key(self.settings.prefix)))

    async def workers(self) -> list[dict[str, Any]]:
        from .ops.workers import list_workers

        return await self.run(list_workers(workers_key(self.settings.prefix), self.settings.prefix))

    async def retry(self, queue: str, job_ids: Sequence[str] | None = None) -> int:
        if job_ids is not None:
            return await self.run(ops.retry_failed(self.keys(queue), job_ids))
        total = 0
        while moved := await self.run(ops.retry_failed(self.keys(queue), None)):
            total += moved
        return total

    async def remove(self, queue: str, job_id: str) -> JobState:
        return await self.run(ops.remove(self.keys(queue), job_id))

    async def purge(
        self, queue: str, states: Sequence[JobState | str] = (JobState.WAITING, JobState.DELAYED)
    ) -> int:
        return await self.run(ops.purge(self.keys(queue), [JobState(s) for s in states]))

    async def cancel(
        self, queue: str, job_id: str, reason: str = "cancelled by request", by: str | None = None
    ) -> str:
        return await self.run(self._cancel_op(queue, job_id, reason, by))

    async def job_logs(self, queue: str, job_id: str, start: int = 0, end: int = -1) -> list[str]:
        return await self.run(ops.job_logs(self.keys(queue), job_id, start, end))

    async def add_schedule(self, schedule: Schedule) -> bool:
        return await self.run(schedules.upsert(self.keys(schedule.queue), schedule, int(time.time() * 1000)))

    async def remove_schedule(self, queue: str, name: str) -> bool:
        return await self.run(schedules.remove(self.keys(queue), name))

    async def schedules(self, queue: str) -> list[ScheduleState]:
        return await self.run(schedules.list_all(self.keys(queue)))

    async def read_events(
        self, queue: str, after: str = "0-0", count: int = 1000, block: float | None = None
    ) -> tuple[list[ops.Event], str]:
        block_ms = None if block is None else max(1, int(block * 1000))
        return await self.run(ops.read_events(self.keys(queue), after, count, block_ms))

    async def events(self, queue: str, after: str = "$") -> AsyncIterator[ops.Event]:
        if after == "$":  # pinned once, as in the sync face
            after = await self.last_event_id(queue)
        while True:
            batch, after = await self.read_events(queue, after, block=5.0)
            for event in batch:
                yield event

    async def last_event_id(self, queue: str) -> str:
        return await self.run(ops.last_event_id(self.keys(queue)))

    async def load_scripts(self) -> int:
        scripts = self._scripts()
        missing = self._unloaded(
            scripts, await self.transport.call_on_primaries("SCRIPT", "EXISTS", *(s.sha for s in scripts))
        )
        for script in missing:
            await self.transport.load_script(script.source)
        return len(missing)

    async def pause(self, queue: str) -> None:
        await self.run(ops.update_settings(self.keys(queue), {"paused": 1}))

    async def resume(self, queue: str) -> None:
        await self.run(ops.update_settings(self.keys(queue), {"paused": None}))

    async def set_limits(
        self,
        queue: str,
        *,
        concurrency: int | Unset | None = UNSET,
        rate: tuple[int, float] | Unset | None = UNSET,
        group_concurrency: int | Unset | None = UNSET,
        group_rate: tuple[int, float] | Unset | None = UNSET,
        priority_aging: float | Unset | None = UNSET,
    ) -> None:
        await self.run(
            set_limits(self.keys(queue), concurrency, rate, group_concurrency, group_rate, priority_aging)
        )

    async def settings_of(self, queue: str) -> dict[str, int]:
        return await self.run(ops.get_settings(self.keys(queue)))

    async def promote(self, queue: str, job_id: str) -> str:
        return await self.run(ops.promote(self.keys(queue), job_id))

"""Producers: enqueue jobs, read them back and manage queues, from sync or async code.

:class:`Client` and :class:`AsyncClient` share everything but I/O (:mod:`conveyor.producer`):
both build the same operations (:mod:`conveyor.ops`) and hand them to their executor. Each public
method is therefore a one-line wrapper on each face. A job's arguments and options are
encoded by :mod:`conveyor.ops.encode`; the handles an enqueue returns are
:mod:`conveyor.handles`'.

The client is all the HTTP API (:mod:`conveyor.api`) knows of Redis: what the API needs,
a range of a job's log, the newest event's position, a readiness check, is a method here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Generator, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from . import ops
from .config import Settings
from .errors import ConfigurationError
from .flows import Flow, FlowHandle
from .handles import AsyncJobHandle, JobHandle
from .job import Job, JobState
from .ops import schedules
from .ops.keys import queues_key, workers_key
from .ops.manage import UNSET, Unset, set_limits
from .redis.base import AsyncTransport, SyncTransport
from .redis.connect import as_async_transport, as_sync_transport, async_transport, sync_transport
from .redis.executors import AsyncExecutor, SyncExecutor
from .schedules import Schedule, ScheduleState
from .task import P, R, Task, TaskCall

if TYPE_CHECKING:
    from .history.store import HistoryStore
    from .history.sync import SyncHistory

__all__ = ["UNSET", "AsyncClient", "AsyncJobHandle", "Client", "JobHandle", "Unset"]

from .producer import Producer, T, gc_paused


def _history_url(settings: Settings) -> str:
    if not settings.history_url:
        raise ConfigurationError(
            "no history store named: set CONVEYOR_HISTORY_URL (sqlite:///path/history.db or "
            "postgresql://user@host/db), or pass history_url= to the client"
        )
    return settings.history_url


class Client(Producer):
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
        with gc_paused():
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


class AsyncClient(Producer):
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
        with gc_paused():  # other tasks run meanwhile without it too: a few ms per 1,000 jobs
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

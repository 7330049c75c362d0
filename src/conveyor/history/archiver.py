"""The archiver: moves finished jobs from each queue's hand-off in Redis into the store.

Any number of processes archive at once -- every worker that has a history URL, the API, or
``conveyor history archive`` -- with no leader: they read the hand-off as one consumer group,
so each entry goes to one of them. An entry is deleted from Redis only after the database
transaction that stores it has committed; an archiver that dies in between leaves its
entries pending, and another takes them over after ``claim_idle`` (XAUTOCLAIM). Storing an
entry twice stores nothing more (the store is idempotent), so a replay is harmless.

While the database is down or slow, jobs keep finishing and the hand-off grows, up to its
bound (``conveyor history enable --max-jobs``): beyond it, jobs are counted as dropped
(``Backlog.dropped``), never silently, and the archiver warns. When the database returns, the
backlog drains at the store's batch speed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from redis.exceptions import RedisError

from ..ops import history as handoff_ops
from ..ops.history import Entry
from ..ops.keys import QueueKeys
from ..ops.steps import Step
from .config import HistoryConfig
from .handoff import to_record
from .records import JobRecord
from .store import HistoryStore, WriteResult, open_store

log = logging.getLogger("conveyor.history")

T = TypeVar("T")


class Runs(Protocol):
    """What runs Redis operations: an ``AsyncClient``, or a worker's executor."""

    async def run(self, operation: Generator[Step, Any, T]) -> T: ...


Discover = Callable[[], Awaitable[Mapping[str, QueueKeys]]]
"""Names the queues to archive, for an archiver that follows every queue (the API's)."""


def consumer_name() -> str:
    """A name no other archiver has: host, process and a random part (a restarted process
    is a new consumer; what the old one held is claimed after ``claim_idle``)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(slots=True)
class ArchiverStats:
    stored: int = 0
    """Job records this archiver's writes stored."""
    duplicates: int = 0
    """Records the store held already (a replay after a crash, or a batch claimed twice)."""
    unreadable: int = 0
    """Entries that were not a finished job written by Conveyor: logged and deleted."""
    claimed: int = 0
    """Entries taken over from archivers that stopped answering."""
    batches: int = 0


class Archiver:
    """Archives the hand-offs of ``queues`` (name -> keys; ``client.keys(name)`` gives them)
    into ``store`` until ``closing`` is set."""

    def __init__(
        self,
        redis: Runs,
        store: HistoryStore,
        queues: Mapping[str, QueueKeys],
        *,
        consumer: str | None = None,
        batch: int = 1000,
        idle_poll: float = 0.2,
        idle_poll_max: float = 2.0,
        claim_idle: float = 30.0,
        max_jobs: int = handoff_ops.DEFAULT_MAX_JOBS,
        closing: asyncio.Event | None = None,
        discover: Discover | None = None,
        rediscover: float = 10.0,
    ) -> None:
        if batch < 1:
            raise ValueError("an archiver's batch holds at least one job")
        self.redis = redis
        self.store = store
        self.queues = dict(queues)
        self.consumer = consumer or consumer_name()
        self.batch = batch
        self.idle_poll = idle_poll
        self.idle_poll_max = max(idle_poll, idle_poll_max)
        self.claim_idle_ms = int(claim_idle * 1000)
        self.max_jobs = max_jobs
        # Entries hold a script call's jobs each: one at a trickle, a hundred or more under
        # load. A read of this many entries makes a transaction of roughly `batch` jobs then.
        self.entries_per_read = max(1, batch // 20)
        self.closing = closing or asyncio.Event()
        self.stats = ArchiverStats()
        self._warned_dropped: dict[str, int] = {}
        self._next_claim = 0.0
        self.discover = discover
        self.rediscover = rediscover
        self._next_discovery = 0.0

    async def enable(self) -> None:
        """Turn history on for every queue archived here (a bound set before is kept)."""
        for keys in self.queues.values():
            await self.redis.run(handoff_ops.enable(keys, self.max_jobs))

    async def _discover(self) -> None:
        """Add the queues ``discover`` names that are new (every ``rediscover`` seconds)."""
        now = time.monotonic()
        if self.discover is None or now < self._next_discovery:
            return
        self._next_discovery = now + self.rediscover
        for queue, keys in (await self.discover()).items():
            if queue not in self.queues:
                await self.redis.run(handoff_ops.enable(keys, self.max_jobs))
                self.queues[queue] = keys
                log.info("history: archiving queue %s from now", queue)

    async def run(self) -> None:
        await self._until_done(self.enable)
        pause = self.idle_poll
        while not self.closing.is_set():
            try:
                await self._discover()
                moved = await self.run_once()
            except RedisError as exc:
                log.warning("history: could not read the hand-off (%s); will retry", exc)
                moved = 0
            # Every worker with a history URL archives, so an idle fleet must not keep Redis
            # busy: the pause between looks doubles while nothing comes, up to idle_poll_max.
            if moved:
                pause = self.idle_poll
            else:
                await self._closing_within(pause)
                pause = min(pause * 2, self.idle_poll_max)

    async def run_once(self, *, claim: bool | None = None) -> int:
        """One pass over every queue: stale entries of silent archivers (``claim``; by
        default at most every few seconds), then new ones. Returns how many entries were
        stored or dropped (in jobs)."""
        moved = 0
        now = time.monotonic()
        if claim is None:
            claim = now >= self._next_claim
        if claim:
            self._next_claim = now + max(1.0, self.claim_idle_ms / 4000)
        for keys in self.queues.values():
            if claim:
                stale = await self.redis.run(
                    handoff_ops.claim_stale(keys, self.consumer, self.claim_idle_ms, self.entries_per_read)
                )
                if stale:
                    taken = sum(len(entry.jobs) for entry in stale)
                    self.stats.claimed += taken
                    log.warning(
                        "history: took over %d jobs of %s from an archiver that stopped answering",
                        taken,
                        keys.queue,
                    )
                    moved += await self._archive(keys, stale)
                await self._watch_backlog(keys)
            # The next batch is read and converted while the last one is being written:
            # the database's round trips overlap the archiver's own work.
            writing: asyncio.Task[int] | None = None
            try:
                while not self.closing.is_set():
                    entries = await self.redis.run(
                        handoff_ops.read_new(keys, self.consumer, self.entries_per_read)
                    )
                    if not entries:
                        break
                    records, jobs = self._records(keys, entries)
                    if writing is not None:
                        moved += await writing
                    writing = asyncio.create_task(self._commit(keys, entries, records, jobs))
                    if len(entries) < self.entries_per_read:
                        break
            finally:
                if writing is not None:
                    moved += await writing
        return moved

    async def drain(self) -> int:
        """Archive until the hand-offs hold nothing this archiver may take now."""
        total = moved = await self.run_once(claim=True)
        while moved:
            moved = await self.run_once(claim=False)
            total += moved
        return total

    async def _archive(self, keys: QueueKeys, entries: list[Entry]) -> int:
        records, jobs = self._records(keys, entries)
        return await self._commit(keys, entries, records, jobs)

    def _records(self, keys: QueueKeys, entries: list[Entry]) -> tuple[list[JobRecord], int]:
        """The records of the entries' jobs, and how many jobs they held (unreadable ones
        included: they are logged here, and deleted with the rest)."""
        records: list[JobRecord] = []
        jobs = 0
        for entry in entries:
            for fields in entry.jobs:
                jobs += 1
                try:
                    records.append(to_record(keys.queue, fields))
                except ValueError as exc:
                    self.stats.unreadable += 1
                    log.error(
                        "history: a job in entry %s of %s is not a finished job (%s); deleted: %.300r",
                        entry.entry_id,
                        keys.queue,
                        exc,
                        fields,
                    )
        return records, jobs

    async def _commit(
        self, keys: QueueKeys, entries: list[Entry], records: list[JobRecord], jobs: int
    ) -> int:
        """Store the records, then delete the entries from Redis; how many jobs that moved."""
        if records:
            written = await self._write(records)
            if written is None:
                return 0  # closing while the database was away: the entries stay pending
            self.stats.stored += written.written
            self.stats.duplicates += written.duplicates
        await self._until_done(lambda: self.redis.run(handoff_ops.archived(keys, entries)))
        self.stats.batches += 1
        return jobs

    async def _write(self, records: list[JobRecord]) -> WriteResult | None:
        """Write until the store takes the batch; None if the archiver closes first."""
        pause = 0.5
        failures = 0
        while True:
            try:
                return await self.store.write(records)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is another system: anything may come back
                failures += 1
                if failures == 1 or failures % 20 == 0:
                    log.warning(
                        "history: the store did not take %d jobs (%s: %s); retrying, the hand-off "
                        "in Redis keeps them meanwhile",
                        len(records),
                        type(exc).__name__,
                        exc,
                    )
            if await self._closing_within(pause):
                return None
            pause = min(pause * 2, 5.0)

    async def _until_done(self, step: Callable[[], Awaitable[object]]) -> None:
        """Run a Redis step, retrying while Redis is unreachable (until closing)."""
        pause = 0.2
        while True:
            try:
                await step()
                return
            except RedisError as exc:
                log.warning("history: Redis did not answer (%s); retrying", exc)
            if await self._closing_within(pause):
                return
            pause = min(pause * 2, 2.0)

    async def _watch_backlog(self, keys: QueueKeys) -> None:
        backlog = await self.redis.run(handoff_ops.backlog(keys))
        seen = self._warned_dropped.get(keys.queue)
        if seen is None:
            self._warned_dropped[keys.queue] = backlog.dropped
        elif backlog.dropped > seen:
            log.error(
                "history: the hand-off of %s was full (%d jobs): %d finished jobs were not "
                "recorded in the history; raise it with conveyor history enable --max-jobs",
                keys.queue,
                backlog.max_jobs or 0,
                backlog.dropped - seen,
            )
            self._warned_dropped[keys.queue] = backlog.dropped
        if backlog.max_jobs and backlog.jobs > backlog.max_jobs // 2:
            log.warning(
                "history: the hand-off of %s holds %d of at most %d jobs; is the database slow or away?",
                keys.queue,
                backlog.jobs,
                backlog.max_jobs,
            )

    async def _closing_within(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self.closing.wait(), seconds)
        except TimeoutError:
            return False
        return True


async def archive_until_closed(
    redis: Runs,
    queues: Mapping[str, QueueKeys],
    url: str,
    closing: asyncio.Event,
    *,
    config: HistoryConfig | None = None,
    final_drain: bool = False,
    **options: Any,
) -> None:
    """Open the store at ``url`` and archive ``queues`` until ``closing`` is set: what a worker
    or the API runs beside its own work. A database that cannot be reached at the start is
    tried again (jobs run meanwhile, their hand-off waits in Redis); nothing here ends the
    process that runs it. With ``final_drain``, once closing, it stores what the hand-offs
    hold then (a burst worker's last jobs) before it returns."""
    pause = 1.0
    store: HistoryStore | None = None
    while store is None:
        try:
            store = await open_store(url, config)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the database is another system: anything may come back
            log.warning(
                "history: cannot open the store (%s: %s); retrying in %.0f s", type(exc).__name__, exc, pause
            )
            try:
                await asyncio.wait_for(closing.wait(), pause)
                return
            except TimeoutError:
                pause = min(pause * 2, 30.0)
    try:
        archiver = Archiver(redis, store, queues, closing=closing, **options)
        log.info("history: archiving %s into the %s store", ", ".join(queues), store.backend)
        await archiver.run()
        if final_drain:  # a burst worker leaves no job of its own behind in the hand-off
            await Archiver(redis, store, archiver.queues, **options).drain()
    except Exception:
        log.exception(
            "history: the archiver stopped on an unexpected error; jobs keep running, "
            "their hand-off waits in Redis for another archiver"
        )
    finally:
        await store.close()

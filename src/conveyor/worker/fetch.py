"""The fetch loop: claims jobs for free slots and hands them to the runner.

One script call per queue claims up to as many jobs as there are free slots (queues in strict
priority order). When there is nothing to do, the loop blocks in Redis (BZPOPMIN on the queues'
markers), woken when work arrives or the next delayed job is due; with a single queue the claim
runs in Redis the moment the wait ends. A *suspect* (a job that lost its worker too often) comes
only to a worker that holds nothing, and alone: the loop then claims nothing more until it is
done. A busy worker may be told to make room for one: it drains, then claims from the suspect's
queue first. The loop runs while the worker is ``RUNNING`` (:mod:`conveyor.worker.phases`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any

from .. import ops
from ..errors import RETRYABLE_REDIS_ERRORS
from ..ops.keys import QueueKeys
from ..redis.base import AsyncTransport
from ..redis.executors import AsyncExecutor
from .held import HeldJobs
from .phases import Phase, Phases
from .run import JobRunner
from .settings import WorkerSettings

log = logging.getLogger("conveyor.worker")


class Fetcher:
    """Claims jobs for one worker while it runs; ``stop`` is called once burst mode is done."""

    def __init__(
        self,
        *,
        worker_id: str,
        executor: AsyncExecutor,
        transport: AsyncTransport,
        keys: Mapping[str, QueueKeys],
        queues: Sequence[str],
        config: WorkerSettings,
        runner: JobRunner,
        held: HeldJobs,
        written: asyncio.Event,
        phases: Phases,
        stop: Callable[[], None],
    ) -> None:
        self.worker_id = worker_id
        self.executor = executor
        self.transport = transport
        self.keys = keys
        self.queues = list(queues)
        self.config = config
        self._runner = runner
        self._held = held
        self._written = written
        """Set while every outcome is written (see ``Acknowledger.written``)."""
        self._phases = phases
        self._stop = stop
        self._lease_ms = int(config.lease * 1000)
        self._room_for: str | None = None
        """The queue whose suspect this worker makes room for: claimed from first once idle,
        or a busier queue earlier in the order would fill the room again."""

    async def run(self) -> None:
        concurrency = self.config.concurrency
        failures = 0
        while self._phases.current is Phase.RUNNING:
            if self._held.alone and await self._waited_while_alone():
                continue
            free = concurrency - self._runner.busy
            if free <= 0:
                await self._wait_for_slot()
                continue
            try:
                wanted = free
                wait_ms = -1
                for queue in self._claim_order():
                    claim = await self.executor.run(self._claim(queue, free))
                    if claim.wait_ms >= 0:
                        wait_ms = claim.wait_ms if wait_ms < 0 else min(wait_ms, claim.wait_ms)
                    free = self._start_claimed(queue, claim, free)
                    if free <= 0:
                        break
                failures = 0
                if free < wanted:  # claimed some, or must now run alone
                    continue
                if not await self._nothing_claimed(free, wait_ms):
                    return
            except RETRYABLE_REDIS_ERRORS as exc:
                failures += 1
                delay = min(0.05 * 2**failures, 2.0)
                log.warning("claim failed (%s); retrying in %.2f s", exc, delay)
                await asyncio.sleep(delay)

    async def _waited_while_alone(self) -> bool:
        """While this worker must be idle before it claims again, wait a little and say so
        (True); once it is idle, or no suspect needs the room any more, it claims again."""
        if self._held.holds_any() and not await self._room_no_longer_needed():
            # Woken when a job finishes or is acknowledged; the timeout covers a lease
            # lost at a heartbeat, which drops a held job without telling this loop.
            self._held.slot_freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._held.slot_freed.wait(), 1.0)
            return True
        self._held.alone = False
        return False

    async def _wait_for_slot(self) -> None:
        self._held.slot_freed.clear()
        await self._held.slot_freed.wait()

    async def _nothing_claimed(self, free: int, wait_ms: int) -> bool:
        """No queue had work for us: wait for some (or, in burst mode, for the running jobs,
        or stop once the queues are drained). False: the loop is done."""
        max_block = self.config.sweep_interval
        if self.config.burst:
            busy = self._runner.busy
            if busy == 0 and not self._written.is_set():
                # Outcomes not yet written may make more work: a retry due now, the parent of
                # a flow whose last child just finished. Claim again once they are.
                await self._written.wait()
                return True
            if busy == 0 and (wait_ms < 0 or wait_ms > max_block * 1000):
                log.info("burst mode: queues drained")
                self._stop()
                return False
            if busy > 0:
                await self._wait_for_slot()
                return True
        timeout = max_block if wait_ms < 0 else min(max_block, max(wait_ms, 1) / 1000)
        if len(self.queues) == 1:
            # Block and claim in one go: the claim runs in Redis the moment work arrives.
            queue = self.queues[0]
            keys = self.keys[queue]
            claim = await self.executor.run_after_block(
                ("BZPOPMIN", keys.marker, timeout), self._claim(queue, free)
            )
            self._start_claimed(queue, claim, free)
        else:
            await self._block(timeout)
        return True

    def _claim_order(self) -> Sequence[str]:
        """The queues in priority order, but the one whose suspect we made room for first."""
        room_for = self._room_for
        if room_for is None:
            return self.queues
        self._room_for = None
        return [room_for, *(q for q in self.queues if q != room_for)]

    async def _room_no_longer_needed(self) -> bool:
        """True when this worker makes room for suspects and none waits any more (another
        worker took it): it goes back to claiming instead of draining for nothing."""
        if self._room_for is None:
            return False  # it runs a suspect itself
        try:
            waiting = await self.executor.run(ops.suspects_waiting(self.keys[self._room_for]))
        except RETRYABLE_REDIS_ERRORS:
            return False
        if waiting:
            return False
        self._room_for = None
        return True

    def _claim(self, queue: str, free: int) -> Generator[ops.Step, Any, ops.Claim]:
        return ops.claim(
            self.keys[queue],
            free,
            self._lease_ms,
            self.worker_id,
            self.config.failed,
            idle=not self._held.holds_any(),
            make_room_ms=int(self.config.make_room_after * 1000),
        )

    def _start_claimed(self, queue: str, claim: ops.Claim, free: int) -> int:
        """Start the claimed jobs; returns the slots still free: none once this worker must
        run alone (a suspect, or room to make for one), as it claims nothing more then."""
        if claim.alone:
            self._held.alone = True
            self._room_for = None if claim.jobs else queue
            if claim.jobs:
                log.warning("job %s/%s lost its worker before: running it alone", queue, claim.jobs[0].id)
        self._runner.start_all(queue, claim.jobs, claim.now_ms)
        return 0 if self._held.alone else free - len(claim.jobs)

    async def _block(self, timeout: float) -> None:
        """Wait in Redis until a marker says there is work, or ``timeout`` seconds pass."""
        # In a cluster the markers live in different slots: the transport waits on each there.
        await self.transport.pop_any("BZPOPMIN", [self.keys[q].marker for q in self.queues], timeout)

"""The sweep: how the jobs of a lost worker come back.

Every worker sweeps its queues every ``sweep_interval`` seconds; there is no sweeper process
and no leader. The sweep script re-delivers the jobs whose lease ran out -- their worker died,
hung or lost Redis for longer than the lease -- and dead-letters a job whose worker was lost
``max_crashes`` times. Leases that ran out while Redis itself was down (or out of every
worker's reach) are the exception: their workers get a lease's time after it to renew them.
The sweep is atomic, so the sweeps of many workers never re-deliver a job twice. Each round
also finishes what flows left behind: notes for parents that no acknowledgement delivered,
and flows whose creator stopped half-way.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping

from redis.exceptions import RedisError

from .. import ops
from ..errors import RETRYABLE_REDIS_ERRORS
from ..ops import flows
from ..ops.keys import QueueKeys
from ..redis.executors import AsyncExecutor

log = logging.getLogger("conveyor.worker")


async def tell_parents(executor: AsyncExecutor, keys: QueueKeys, failed: ops.Retention) -> None:
    """Tell the parents of finished children (flows); the sweep retries what fails here."""
    try:
        await executor.run(flows.drain_outbox(keys, failed))
    except RedisError as exc:
        log.warning(
            "could not tell parents in %s that their children finished (%s); will retry", keys.queue, exc
        )


class Sweeper:
    """Sweeps a worker's queues until ``closing`` is set."""

    def __init__(
        self,
        executor: AsyncExecutor,
        keys: Mapping[str, QueueKeys],
        *,
        interval: float,
        lease: float,
        max_crashes: int,
        failed: ops.Retention,
        alone_after: int | None,
        closing: asyncio.Event,
    ) -> None:
        self.executor = executor
        self.keys = keys
        self.interval = interval
        self.lease_ms = int(lease * 1000)
        self.max_crashes = max_crashes
        self.failed = failed
        self.alone_after = alone_after
        self.closing = closing

    async def run(self) -> None:
        # The first sweep comes at a random point, to spread the sweeps of workers started together.
        pause = random.uniform(0, self.interval)
        while not await self._closing_within(pause):
            try:
                await self.sweep()
            except RETRYABLE_REDIS_ERRORS as exc:
                log.warning("sweep failed (%s); will retry", exc)
            except RedisError:
                # Sweeping is how lost jobs come back: one bad answer must not end it for good.
                log.exception("sweep failed; will retry at the next interval")
            pause = self.interval

    async def _closing_within(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True as soon as the worker is closing."""
        try:
            await asyncio.wait_for(self.closing.wait(), seconds)
        except TimeoutError:
            return False
        return True

    async def sweep(self) -> None:
        for queue, keys in self.keys.items():
            await self._finish_flows(keys)
            recovered, dead, silence_ms, held_back = await self.executor.run(
                ops.sweep(
                    keys, self.max_crashes, self.failed, alone_after=self.alone_after, lease_ms=self.lease_ms
                )
            )
            if silence_ms:
                log.warning(
                    "no worker reached %s for %.1f s (Redis was down or out of reach); %d leases "
                    "that ran out meanwhile are left to their workers to renew for %.0f s before "
                    "they count as lost",
                    queue,
                    silence_ms / 1000,
                    held_back,
                    self.lease_ms / 1000,
                )
            if recovered:
                log.warning(
                    "re-delivered %d jobs of %s whose worker was lost: %s",
                    len(recovered),
                    queue,
                    ", ".join(recovered[:10]),
                )
            if dead:
                log.error(
                    "dead-lettered %d jobs of %s that lost their worker %d times: %s",
                    len(dead),
                    queue,
                    self.max_crashes,
                    ", ".join(dead[:10]),
                )

    async def _finish_flows(self, keys: QueueKeys) -> None:
        """Notes left by jobs that ended outside a worker's acknowledgement (expired, cancelled,
        lost) or by a worker that died before delivering them; flows whose creator died half-way."""
        try:
            await self.executor.run(flows.drain_outbox(keys, self.failed))
            stale_ms = flows.STALE_FLOW_RECORD_MS
            replayed = await self.executor.run(flows.replay_stale(keys, stale_ms))
        except RedisError as exc:  # never in the way of the sweep itself
            log.warning("could not finish the flows of %s (%s); will retry", keys.queue, exc)
            return
        if replayed:
            log.warning(
                "finished creating %d flows of %s whose creator stopped half-way", replayed, keys.queue
            )

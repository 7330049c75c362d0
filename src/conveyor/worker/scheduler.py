"""The scheduler loop every worker runs: register the schedules declared on its tasks, then
fire due ticks (:mod:`conveyor.ops.schedules`) and wait until the next one, or until a
schedule is added or changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence

from redis.exceptions import RedisError

from ..ops.keys import QueueKeys
from ..ops.schedules import fire_due, upsert
from ..redis.base import AsyncTransport
from ..redis.executors import AsyncExecutor
from ..schedules import Schedule

log = logging.getLogger("conveyor.schedules")


MAX_IDLE_SECONDS = 5.0
"""Schedulers look at their queues at least this often, woken or not."""


async def run_schedulers(
    executor: AsyncExecutor,
    keys: Sequence[QueueKeys],
    closing: asyncio.Event,
    declared: Mapping[str, Sequence[Schedule]],
) -> None:
    """The loop every worker runs: register the schedules declared on its tasks, then fire
    due ticks and wait until the next one (at most ``MAX_IDLE_SECONDS``), or until a
    schedule of its queues is added or changed."""
    for queue_keys in keys:
        for schedule in declared.get(queue_keys.queue, ()):
            await executor.run(upsert(queue_keys, schedule, int(time.time() * 1000)))
    looked: dict[QueueKeys, int] = {}
    """When this loop last looked at each queue: a tick due since then came due while it ran."""
    while not closing.is_set():
        wait_ms = -1
        for queue_keys in keys:  # one queue failing does not hold up the others
            now_ms = int(time.time() * 1000)
            try:
                until = await executor.run(fire_due(queue_keys, now_ms, looked.get(queue_keys)))
            except (OSError, RedisError) as exc:
                log.warning("scheduler: %s; will retry", exc)
                continue
            except Exception as exc:  # a bad schedule must not stop the worker
                log.error("scheduler: %s", exc)
                continue
            looked[queue_keys] = now_ms
            if until >= 0:
                wait_ms = until if wait_ms < 0 else min(wait_ms, until)
        pause = MAX_IDLE_SECONDS if wait_ms < 0 else min(MAX_IDLE_SECONDS, wait_ms / 1000 + 0.001)
        await _pause(executor.transport, keys, pause, closing)


async def _pause(
    transport: AsyncTransport, keys: Sequence[QueueKeys], seconds: float, closing: asyncio.Event
) -> None:
    """Wait ``seconds``, or less: until a schedule of ``keys`` is added or changed (its writer
    sets the queue's schedule marker) or the worker closes.

    Every scheduler of a queue blocks on the one marker, and a wake-up reaches one of them:
    that is enough, as the woken one fires the new schedule's ticks itself (firing is a
    compare-and-set, so which worker fires is of no matter), and the others see it at their
    next look. The marker holds a wake-up until a scheduler takes it, so one set while none
    waits is not lost either. It is lost only when the wait taking it is cancelled, which is
    when this worker closes: the marker is then set again, for another worker to take.
    A wake-up taken by a scheduler whose next look fails is not handed on: the queue is
    failing for the others too, and the retry comes within ``MAX_IDLE_SECONDS``.

    The markers of several queues are waited on together: one command on one server, one
    wait per marker in a cluster, where they live in different slots (``pop_any``). A
    wake-up that a sibling wait took before it was ended is no loss: the woken scheduler
    looks at all its queues."""
    markers = [queue_keys.schedule_marker for queue_keys in keys]
    deadline = time.monotonic() + seconds
    woken = asyncio.ensure_future(transport.pop_any("BZPOPMIN", markers, round(max(seconds, 0.001), 3)))
    closed = asyncio.ensure_future(closing.wait())
    try:
        await asyncio.wait((woken, closed), return_when=asyncio.FIRST_COMPLETED)
    finally:
        closed.cancel()
        if not woken.done():
            woken.cancel()
            await asyncio.gather(woken, return_exceptions=True)
            await _hand_back(transport, markers)
    if closing.is_set() or woken.cancelled() or woken.exception() is None:
        return
    # Redis refused the wait or is gone: sleep instead, or this loop would spin on the error.
    log.warning("scheduler: %s; will retry", woken.exception())
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(closing.wait(), max(0.0, deadline - time.monotonic()))


async def _hand_back(transport: AsyncTransport, markers: Sequence[str]) -> None:
    """Set the markers again after a wait that may have taken a wake-up was cancelled."""
    for marker in markers:
        with contextlib.suppress(OSError, RedisError):
            await transport.call("ZADD", marker, 0, "w")

"""The scheduler loop every worker runs: register the schedules declared on its tasks, then
fire due ticks (:mod:`conveyor.ops.schedules`) and sleep until the next one.
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
from ..redis.executors import AsyncExecutor
from ..schedules import Schedule

log = logging.getLogger("conveyor.schedules")


MAX_IDLE_SECONDS = 5.0
"""Schedulers look for new or changed schedules at least this often."""


async def run_schedulers(
    executor: AsyncExecutor,
    keys: Sequence[QueueKeys],
    closing: asyncio.Event,
    declared: Mapping[str, Sequence[Schedule]],
) -> None:
    """The loop every worker runs: register the schedules declared on its tasks, then fire
    due ticks and sleep until the next one (at most ``MAX_IDLE_SECONDS``)."""
    for queue_keys in keys:
        for schedule in declared.get(queue_keys.queue, ()):
            await executor.run(upsert(queue_keys, schedule, int(time.time() * 1000)))
    while not closing.is_set():
        wait_ms = -1
        try:
            for queue_keys in keys:
                until = await executor.run(fire_due(queue_keys, int(time.time() * 1000)))
                if until >= 0:
                    wait_ms = until if wait_ms < 0 else min(wait_ms, until)
        except (OSError, RedisError) as exc:
            log.warning("scheduler: %s; will retry", exc)
        except Exception as exc:  # a bad schedule must not stop the worker
            log.error("scheduler: %s", exc)
        pause = MAX_IDLE_SECONDS if wait_ms < 0 else min(MAX_IDLE_SECONDS, wait_ms / 1000 + 0.001)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(closing.wait(), pause)

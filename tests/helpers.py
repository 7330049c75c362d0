"""Helpers shared by tests: a worker running in the test's event loop, and a polling wait."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from conveyor import Tasks, Worker


@contextlib.asynccontextmanager
async def running_worker(tasks: Tasks, url: str, **options: Any) -> AsyncIterator[Worker]:
    """A worker serving in this event loop; stopped gracefully when the block ends."""
    options.setdefault("lease", 2.0)
    options.setdefault("sweep_interval", 0.5)
    options.setdefault("shutdown_grace", 5.0)
    worker = Worker(tasks, url=url, **options)
    serving = asyncio.create_task(worker.serve())
    await asyncio.sleep(0)
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(serving, 15)


async def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> None:
    """Poll a test condition (tests may poll; the product does not)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)

"""Helpers shared by tests: a worker running in the test's event loop, a polling wait, and
the command line run as a user runs it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from conveyor import Tasks, Worker
from conveyor.history import JobRecord, open_store

ROOT = Path(__file__).resolve().parents[1]


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


def run_cli(url: str, *args: str, code: int | None = 0, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """``conveyor ARGS`` in a fresh process against ``url``; its exit code must be ``code``
    (None: not checked)."""
    env = {**os.environ, "CONVEYOR_REDIS_URL": url, "COLUMNS": "250"}
    env.pop("CONVEYOR_QUEUE", None)
    result = subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
    )
    if code is not None:
        assert result.returncode == code, result.stdout + result.stderr
    return result


def stored_history(url: str, records: Sequence[JobRecord]) -> str:
    """A history store at ``url`` holding ``records`` (written through the store, as an
    archiver writes them); returns ``url``."""

    async def write() -> None:
        async with await open_store(url) as store:
            await store.write(records)

    asyncio.run(write())
    return url

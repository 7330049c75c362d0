"""Tasks used by tests that run workers as separate processes (``conveyor worker tests.apps.recovery``)."""

from __future__ import annotations

import asyncio
import os
import time

from conveyor import Tasks

tasks = Tasks(queue=os.environ.get("TEST_QUEUE", "recovery"))


@tasks.task
async def sleepy(seconds: float) -> int:
    await asyncio.sleep(seconds)
    return os.getpid()


@tasks.task
def blocking(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


@tasks.task
async def noop() -> None:
    return None

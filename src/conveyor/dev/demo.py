"""The example app ``conveyor dev`` runs: a few tasks that show retries, delays and priorities."""

from __future__ import annotations

import asyncio
import random
import time

from ..task import Tasks

tasks = Tasks(queue="demo")


@tasks.task(timeout=10)
async def resize_image(image_id: int, width: int = 640) -> dict[str, int]:
    """Pretend to resize an image (async I/O)."""
    await asyncio.sleep(random.uniform(0.005, 0.05))
    return {"image_id": image_id, "width": width}


@tasks.task
def checksum(text: str) -> int:
    """A sync task: runs in the worker's thread pool."""
    time.sleep(0.002)
    return sum(text.encode()) % 65_521


DELIBERATE = "(deliberate failure of the demo)"
"""Ends the message of every failure the demo causes on purpose, so that the worker's log
lines about them (and a job that ends failed) read as the demonstration they are."""


@tasks.task(retries=3, backoff=0.2)
async def flaky_call(n: int) -> str:
    """Fails 3 attempts in 10 on purpose, to show retries with backoff."""
    await asyncio.sleep(0.01)
    if random.random() < 0.3:
        raise ConnectionError(f"call {n} refused {DELIBERATE}")
    return "ok"

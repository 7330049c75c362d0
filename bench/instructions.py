"""Instructions per enqueued job, client and server, counted by valgrind's callgrind.

    .venv/bin/python bench/instructions.py                  # bulk (1,000 per call) and single
    .venv/bin/python bench/instructions.py --mode single --jobs 2000
    .venv/bin/python bench/instructions.py --mode lifecycle --per-call 50   # enqueue, claim, complete
    PYTHONPATH=/tmp/old/src .venv/bin/python bench/instructions.py ...    # another checkout's code

Wall-clock figures on this shared 2-core machine move by 2x from one hour to the next;
instruction counts do not. Each figure is the difference between two runs, one that
enqueues ``--jobs`` jobs and one that enqueues none (same start-up, same warm-up), divided
by the number of jobs: what one more job costs the Python process and the server. Needs
``valgrind`` (Debian package) and takes about 30 s per mode. A count is not a time
(cache misses, system calls and the wake-ups between the two processes are not in it),
so it says whether a change made the work smaller, not how much faster it runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CLIENT = """
import sys
from conveyor import Client, Tasks

port, password, mode = sys.argv[1:4]
jobs, per_call = int(sys.argv[4]), int(sys.argv[5])
tasks = Tasks(queue="instructions")

@tasks.task
def noop(i: int) -> None: ...

client = Client.from_url(f"redis://:{password}@127.0.0.1:{port}/0")
client.enqueue_many([noop.call(i) for i in range(per_call)])  # scripts loaded, queue registered
client.enqueue(noop, 0)
if mode in ("bulk", "lifecycle"):
    for start in range(0, jobs, per_call):
        client.enqueue_many([noop.call(i) for i in range(start, start + per_call)])
    if mode == "lifecycle":  # each job claimed and completed, per_call at a time, as a worker would
        from conveyor import ops

        keys = client.keys("instructions")
        keep = ops.Retention(10_000, 86_400_000)
        while True:
            claimed = client.run(ops.claim(keys, per_call, 60_000, "w")).jobs
            if not claimed:
                break
            client.run(ops.complete(keys, keep, [(j.id, j.token, b"null") for j in claimed]))
else:
    for i in range(jobs):
        client.enqueue(noop, i)
client.close()
"""


def _total(out_file: Path) -> int:
    for line in out_file.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {out_file}")


def _run(mode: str, jobs: int, per_call: int, work: Path) -> tuple[int, int]:
    """(client, server) instructions of one run that enqueues ``jobs`` jobs."""
    from conveyor.dev.server import RedisServer

    server = RedisServer(appendonly=False, directory=work / f"server-{mode}-{jobs}")
    server_out = work / f"server-{mode}-{jobs}.callgrind"
    client_out = work / f"client-{mode}-{jobs}.callgrind"
    valgrind = ["valgrind", "--tool=callgrind", "--quiet"]
    server.directory.mkdir(parents=True)
    # The project's own server, started under valgrind: RedisServer waits for it and stops
    # it (SIGTERM, on which the server exits cleanly and callgrind writes its counts).
    server.process = subprocess.Popen(
        [*valgrind, f"--callgrind-out-file={server_out}", *server.command()],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        server._wait_ready(60)  # valgrind starts the server about 50x slower
        subprocess.run(
            [
                *valgrind,
                f"--callgrind-out-file={client_out}",
                sys.executable,
                "-c",
                CLIENT,
                str(server.port),
                server.password or "",
                mode,
                str(jobs),
                str(per_call),
            ],
            check=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
    finally:
        server.stop()
    return _total(client_out), _total(server_out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=["bulk", "single", "lifecycle", "both"], default="both")
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs per measured run (default 10,000)")
    parser.add_argument("--per-call", type=int, default=1_000, help="jobs per enqueue_many call (bulk)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    modes = ["bulk", "single"] if args.mode == "both" else [args.mode]
    with tempfile.TemporaryDirectory(prefix="conveyor-instructions-") as tmp:
        for mode in modes:
            jobs = args.jobs if mode == "bulk" else min(args.jobs, 2_000)
            client0, server0 = _run(mode, 0, args.per_call, Path(tmp))
            client1, server1 = _run(mode, jobs, args.per_call, Path(tmp))
            label = f"{mode} ({args.per_call:,} per call)" if mode != "single" else "single"
            print(
                f"{label}: client {(client1 - client0) / jobs:,.0f} instructions/job, "
                f"server {(server1 - server0) / jobs:,.0f} instructions/job ({jobs:,} jobs)"
            )


if __name__ == "__main__":
    main()

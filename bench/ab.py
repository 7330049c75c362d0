"""A/B benchmark of two git revisions of Conveyor, interleaved in one run.

    .venv/bin/python bench/ab.py d0d62bd HEAD --jobs 100000 --rounds 5
    .venv/bin/python bench/ab.py b805ff5 HEAD --scenarios drain,enqueue,bulk --rounds 6
    .venv/bin/python bench/ab.py HEAD HEAD --env-b AB_WORKER_METRICS=1   # one setting, on vs off

Scenarios, each in a fresh process per revision and round, on one private server:

* ``drain``: N pre-enqueued no-op jobs drained by one worker process (burst mode);
* ``enqueue``: N single sync enqueues (``Client.enqueue``), one round trip each;
* ``bulk``: N jobs in ``enqueue_many`` calls of 10,000.

Each round runs revision A, then B (alternating who goes first); the medians and the
ratio B/A are printed per scenario. Interleaving keeps the machine's drift out of the
comparison. Used to check that a change costs nothing on the hot paths. The scripts use
the public API only, so any two revisions compare. ``--env-b`` sets variables for B's runs
only: ``AB_WORKER_METRICS=1`` gives the drain's worker a metrics port (``metrics_port=0``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

DRAIN = r"""
import json, os, sys, time, logging
from conveyor import Tasks, Client, Worker
tasks = Tasks(queue="ab")
@tasks.task
async def noop(i: int) -> None:
    return None
url, n = sys.argv[1], int(sys.argv[2])
with Client.from_url(url) as c:
    c.purge("ab", ["waiting", "delayed", "completed", "failed"])
    for start in range(0, n, 10_000):
        c.enqueue_many([noop.call(i) for i in range(start, min(n, start + 10_000))])
def redis_cpu():
    with Client.from_url(url) as c:
        info = dict(l.split(":", 1) for l in c.transport.call("INFO", "cpu").splitlines() if ":" in l)
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
logging.basicConfig(level=logging.WARNING)
extra = {"metrics_port": 0} if os.environ.get("AB_WORKER_METRICS") else {}
w = Worker(tasks, url=url, burst=True, concurrency=100, **extra)
cpu = redis_cpu()
t = time.perf_counter(); w.run(); elapsed = time.perf_counter() - t
cpu = redis_cpu() - cpu
print(json.dumps({"processed": w.processed, "rate": n / elapsed, "redis_us_per_job": cpu / n * 1e6}))
"""


ENQUEUE = r"""
import json, sys, time
from conveyor import Tasks, Client
tasks = Tasks(queue="ab")
@tasks.task
async def noop(i: int) -> None:
    return None
url, n, scenario = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with Client.from_url(url) as c:
    c.purge("ab", ["waiting", "delayed", "completed", "failed"])
    c.enqueue(noop, -1)  # connect and load the script outside the timing
    t = time.perf_counter()
    if scenario == "enqueue":
        for i in range(n):
            c.enqueue(noop, i)
    else:
        for start in range(0, n, 10_000):
            c.enqueue_many([noop.call(i) for i in range(start, min(n, start + 10_000))])
    elapsed = time.perf_counter() - t
    waiting = c.counts("ab")["waiting"]
print(json.dumps({"processed": waiting - 1, "rate": n / elapsed, "redis_us_per_job": 0.0}))
"""

SCRIPTS = {"drain": DRAIN, "enqueue": ENQUEUE, "bulk": ENQUEUE}


def export(revision: str, into: Path, label: str) -> Path:
    target = into / label
    target.mkdir()
    archive = subprocess.run(
        ["git", "archive", revision, "src"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target / "src"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--scenarios", default="drain", help="comma-separated: drain, enqueue, bulk (default: drain)"
    )
    parser.add_argument(
        "--enqueue-jobs", type=int, default=20_000, help="N for the single-enqueue scenario (default 20,000)"
    )
    parser.add_argument(
        "--env-b",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for B's runs only (repeat the option)",
    )
    args = parser.parse_args()
    env_b = dict(item.split("=", 1) for item in args.env_b)
    scenarios = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = set(scenarios) - set(SCRIPTS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))} (choose from {', '.join(SCRIPTS)})")
    sys.path.insert(0, str(ROOT / "src"))
    from conveyor.dev.server import RedisServer

    with tempfile.TemporaryDirectory() as tmp, RedisServer(appendonly=False) as server:
        # Labels, not revisions, name the runs: "HEAD HEAD" measures the harness's own bias.
        args.a, args.b = f"A:{args.a}", f"B:{args.b}"
        sources = {label: export(label[2:], Path(tmp), label[0]) for label in (args.a, args.b)}
        rates: dict[tuple[str, str], list[float]] = {(sc, rev): [] for sc in scenarios for rev in sources}
        for round_no in range(args.rounds):
            order = list(sources.items())
            if round_no % 2:  # alternate who goes first, so order effects cancel out
                order.reverse()
            for scenario in scenarios:
                jobs = args.enqueue_jobs if scenario == "enqueue" else args.jobs
                for rev, src in order:
                    out = subprocess.run(
                        [sys.executable, "-c", SCRIPTS[scenario], server.url, str(jobs), scenario],
                        env={
                            "PYTHONPATH": str(src),
                            "PATH": "/usr/bin:/bin",
                            **(env_b if rev == args.b else {}),
                        },
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    result = json.loads(out.stdout.strip().splitlines()[-1])
                    assert result["processed"] == jobs, result
                    rates[scenario, rev].append(result["rate"])
                    cpu = (
                        f", Redis CPU {result['redis_us_per_job']:.1f} us/job" if scenario == "drain" else ""
                    )
                    print(
                        f"round {round_no + 1} {scenario} {rev}: {result['rate']:,.0f} jobs/s{cpu}",
                        flush=True,
                    )
        for scenario in scenarios:
            med = {rev: statistics.median(rates[scenario, rev]) for rev in sources}
            # Each round's B/A ratio compares two runs seconds apart, so the machine's drift
            # over minutes (2x here, from one hour to the next) cancels out of it.
            paired = statistics.median(
                b / a for a, b in zip(rates[scenario, args.a], rates[scenario, args.b], strict=True)
            )
            print(
                f"{scenario}: median {args.a}: {med[args.a]:,.0f} jobs/s; "
                f"{args.b}: {med[args.b]:,.0f} jobs/s; "
                f"ratio {args.b}/{args.a}: {med[args.b] / med[args.a]:.3f}; "
                f"median of the rounds' ratios: {paired:.3f}"
            )


if __name__ == "__main__":
    main()

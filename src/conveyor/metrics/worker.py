"""One worker process's own figures: counted in plain Python on the job path, formatted only
when Prometheus asks (``conveyor worker --metrics-port``).

Cost is the constraint. A worker drains ~50,000 no-op jobs a second and must keep 95 % of
that with metrics on, so the job path takes no lock and allocates nothing: each (queue, task)
has one :class:`TaskFigures`, looked up when a job starts and kept on the job, whose fields are
plain ints, a float and a list of bucket counts (a histogram is an increment at the index
``bisect`` finds). With metrics off the worker holds None instead, and each place on the job
path checks for it once.

Where each figure is counted:

* started, the run-time histogram and in-flight (started minus the runs that ended, so that no
  third counter is kept per job) by the runner; completed too, when the job's function
  returned and its result was handed to the acknowledger;
* retried, failed for good and cancelled from Redis's answer to the acknowledgement batch,
  which alone knows (a ``RetryAfter`` past its ``max_deferrals`` is dead-lettered); a refused
  outcome (the lease ran out, a newer attempt owns the job) counts as a stale ack instead;
* the Redis round trip: each acknowledgement batch (on the loop) and each heartbeat round (in
  the heartbeat thread), round trips the worker makes anyway.

Threads: the event loop writes everything but :class:`BeatFigures`, which only the heartbeat
thread writes. The exporter (:mod:`conveyor.metrics.http`'s server, or a
:class:`~conveyor.metrics.processes.SnapshotWriter`) reads from a thread of its own, copying
each dict and list with one C call (``list(...)``: atomic under the GIL), so a scrape sees each
figure whole, if not all of them at the same instant.

Several processes (``--processes N``): see :mod:`.processes`.
"""

from __future__ import annotations

import asyncio
import os
import time
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Any, TypedDict

from .. import ops
from .buckets import BOUNDS_SECONDS
from .exposition import Family, Kind, LabelCap, Labels, render

BUCKETS = len(BOUNDS_SECONDS) + 1
"""Counts per histogram: one per bound and one past the last."""
TASK_LABELS = 100
"""Task names kept as labels; later ones are reported as ``other``."""
PROBE_EVERY = 0.5
"""Seconds between two wake-ups of the event-loop lag probe."""


_FIRST_BOUND = BOUNDS_SECONDS[0]

# The replies of ``ops.fail`` per job (12 and 13: as 2 and 3, with a note for a flow's parent).
_RETRYING, _DEAD, _CANCELLED = 1, 2, 3
_DEAD_REPLIES = (_DEAD, 12)
_CANCELLED_REPLIES = (_CANCELLED, 13)


class TaskFigures:
    """The counters of one task on one queue. Written on the event loop only."""

    __slots__ = ("cancelled", "completed", "failed", "queue", "retried", "run", "run_sum", "started", "task")

    def __init__(self, queue: str, task: str) -> None:
        self.queue = queue
        self.task = task
        self.started = 0
        self.completed = 0
        self.failed = 0
        self.retried = 0
        self.cancelled = 0
        self.run = [0] * BUCKETS
        """Runs that ended, per bucket of their duration; their sum is the runs ended."""
        self.run_sum = 0.0

    def observe(self, seconds: float) -> None:
        """A run ended after ``seconds``. ``buckets.bucket_of`` inlined, after a shortcut for
        the first bucket, where a drain of short jobs puts nearly all: this runs per job."""
        self.run_sum += seconds
        if seconds <= _FIRST_BOUND:
            self.run[0] += 1
        else:
            self.run[bisect_left(BOUNDS_SECONDS, seconds)] += 1


class BeatFigures:
    """What the heartbeat thread counts; written by that thread only."""

    __slots__ = ("attempted_at", "renewals", "round_trip", "round_trip_sum", "succeeded_at")

    def __init__(self, now: float) -> None:
        self.attempted_at = 0.0
        """``time.monotonic()`` when the thread last began a round; 0: never."""
        self.succeeded_at = now
        """When a round last reached Redis (at first: when the worker was made)."""
        self.renewals = 0
        self.round_trip = [0] * BUCKETS
        self.round_trip_sum = 0.0

    def succeeded(self, seconds: float, renewed: int) -> None:
        self.succeeded_at = time.monotonic()
        self.renewals += renewed
        self.round_trip[bisect_left(BOUNDS_SECONDS, seconds)] += 1
        self.round_trip_sum += seconds


class Snapshot(TypedDict):
    """One process's figures as plain JSON data: what a child of ``--processes N`` writes, and
    what every rendering starts from, so one process and many are exported the same way."""

    pid: int
    at: float
    """``time.time()`` when it was taken."""
    healthy: bool
    jobs: list[list[Any]]
    """``[queue, task, started, completed, failed, retried, cancelled, run_sum, run_counts]``"""
    leases_renewed: int
    leases_lost: int
    stale_acks: int
    redis_round_trip: list[int]
    redis_round_trip_sum: float
    in_flight: dict[str, int]
    concurrency: int
    threads_busy: int
    threads_max: int
    loop_lag: float
    heartbeat_age: float


class WorkerMetrics:
    """The figures of one worker process (``Worker.metrics``)."""

    def __init__(
        self,
        queues: Sequence[str],
        *,
        concurrency: int,
        threads: int,
        lease: float,
        max_loop_block: float,
    ) -> None:
        self.tasks: dict[str, dict[str, TaskFigures]] = {queue: {} for queue in queues}
        """``{queue: {task name: figures}}``, the runner's lookup; several names may share the
        ``other`` figures once the label cap is reached."""
        self._figures: list[TaskFigures] = []
        self._labelled: dict[tuple[str, str], TaskFigures] = {}
        self._cap = LabelCap(TASK_LABELS)
        self.leases_lost = 0
        self.stale_acks = 0
        self.round_trip = [0] * BUCKETS
        """Acknowledgement batches' round trips, timed on the loop."""
        self.round_trip_sum = 0.0
        self.beat = BeatFigures(time.monotonic())
        self.threads_busy = 0
        """Sync jobs handed to the pool whose function has not returned: a job that timed out
        holds its thread until then. (One handed back at shutdown is no longer counted,
        though its thread runs on: its future was cancelled.)"""
        self.concurrency = concurrency
        self.threads_max = threads
        self.lease = lease
        self.max_loop_block = max_loop_block
        self.loop_lag = 0.0
        self.loop_seen = time.monotonic()
        """When the lag probe last ran on the event loop."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._probe: asyncio.TimerHandle | None = None
        self._due = 0.0

    # ------------------------------------------------------------------ on the loop
    def task(self, queue: str, name: str) -> TaskFigures:
        """The figures of ``name`` on ``queue``, made on its first job."""
        figures = self.tasks[queue].get(name)
        if figures is None:
            figures = self.tasks[queue][name] = self._for_label(queue, self._cap(name))
        return figures

    def undeliverable(self, queue: str, name: str) -> TaskFigures:
        """The figures a job that cannot run is counted under: its task name may be anything
        (a typo in another language's enqueue), so it is not kept as a key of its own."""
        return self._for_label(queue, self._cap(name))

    def _for_label(self, queue: str, label: str) -> TaskFigures:
        figures = self._labelled.get((queue, label))
        if figures is None:
            figures = self._labelled[queue, label] = TaskFigures(queue, label)
            self._figures.append(figures)
        return figures

    def thread_started(self, future: asyncio.Future[Any]) -> None:
        """A sync job was handed to the thread pool (its thread is busy until ``future`` is done)."""
        self.threads_busy += 1
        future.add_done_callback(self._thread_done)

    def _thread_done(self, _future: asyncio.Future[Any]) -> None:
        self.threads_busy -= 1

    def acknowledged(self, seconds: float) -> None:
        """An acknowledgement batch took ``seconds`` from send to answer."""
        self.round_trip[bisect_left(BOUNDS_SECONDS, seconds)] += 1
        self.round_trip_sum += seconds

    def failures_recorded(
        self, figures: Sequence[TaskFigures | None], delays: Iterable[int], replies: Sequence[int]
    ) -> None:
        """Redis answered a batch of failures: count each as it was recorded (the replies of
        ``ops.fail``; a refused one is counted by the acknowledger as a stale ack)."""
        for item, delay, reply in zip(figures, delays, replies, strict=True):
            if item is None or not reply:
                continue
            if reply == ops.ALREADY_RECORDED:  # by the try whose reply was lost: as it asked
                reply = (
                    _DEAD if delay == ops.RETRY_NEVER else _CANCELLED if delay == ops.CANCELLED else _RETRYING
                )
            if reply == _RETRYING:
                item.retried += 1
            elif reply in _DEAD_REPLIES:
                item.failed += 1
            elif reply in _CANCELLED_REPLIES:
                item.cancelled += 1

    def start_probe(self, loop: asyncio.AbstractEventLoop) -> None:
        """Measure how late the loop wakes, every ``PROBE_EVERY`` seconds, until :meth:`stop_probe`."""
        self._loop = loop
        self.loop_seen = time.monotonic()
        self._schedule()

    def stop_probe(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            self._probe = None

    def _schedule(self) -> None:
        assert self._loop is not None
        # Measured on time.monotonic(), not loop.time(): uvloop's clock is read once per
        # iteration, and a late wake shows exactly when callbacks before it ran long.
        self._due = time.monotonic() + PROBE_EVERY
        self._probe = self._loop.call_later(PROBE_EVERY, self._wake)

    def _wake(self) -> None:
        now = time.monotonic()
        self.loop_lag = max(0.0, now - self._due)
        self.loop_seen = now
        self._schedule()

    # ------------------------------------------------------------------ in the exporter's thread
    def health(self) -> tuple[bool, dict[str, Any]]:
        """Alive (for a liveness probe): the event loop ran within ``max_loop_block`` -- the
        limit past which the heartbeat, too, takes it for hung and lets its leases go -- and
        the heartbeat thread began a round within two leases (it begins one every third of a
        lease, and a round gives up on Redis after a third; the rest is room for a thread slowed
        by busy job threads holding the GIL). A Redis that does not answer does
        not make the worker unhealthy: restarting it would not bring Redis back, and
        ``heartbeat_age_seconds`` (since a round last reached Redis) says so. A worker still
        starting, whose heartbeat has not begun, is alive while its loop runs."""
        now = time.monotonic()
        loop_silent = now - self.loop_seen
        attempted = self.beat.attempted_at
        beat_silent = now - attempted if attempted else 0.0
        healthy = loop_silent <= self.max_loop_block and beat_silent <= 2 * self.lease
        return healthy, {
            "status": "ok" if healthy else "unhealthy",
            "loop_silent_seconds": round(loop_silent, 3),
            "heartbeat_silent_seconds": round(beat_silent, 3),
            "heartbeat_age_seconds": round(now - self.beat.succeeded_at, 3),
        }

    def snapshot(self) -> Snapshot:
        """The figures now, as plain data."""
        jobs: list[list[Any]] = []
        in_flight = dict.fromkeys(self.tasks, 0)
        for figures in list(self._figures):
            # The ended runs before the starts: both only grow, so started >= ended holds even
            # when the loop counts more between the two reads.
            counts = list(figures.run)
            started = figures.started
            in_flight[figures.queue] += started - sum(counts)
            jobs.append(
                [
                    figures.queue,
                    figures.task,
                    started,
                    figures.completed,
                    figures.failed,
                    figures.retried,
                    figures.cancelled,
                    figures.run_sum,
                    counts,
                ]
            )
        beat = self.beat
        beat_counts = list(beat.round_trip)
        now = time.monotonic()
        lag = self.loop_lag
        if self._probe is not None:  # a loop blocked right now is late already
            lag = max(lag, now - self._due)
        return Snapshot(
            pid=os.getpid(),
            at=time.time(),
            healthy=self.health()[0],
            jobs=jobs,
            leases_renewed=beat.renewals,
            leases_lost=self.leases_lost,
            stale_acks=self.stale_acks,
            redis_round_trip=[a + b for a, b in zip(list(self.round_trip), beat_counts, strict=True)],
            redis_round_trip_sum=self.round_trip_sum + beat.round_trip_sum,
            in_flight=in_flight,
            concurrency=self.concurrency,
            threads_busy=min(self.threads_busy, self.threads_max),
            threads_max=self.threads_max,
            loop_lag=lag,
            heartbeat_age=now - beat.succeeded_at,
        )

    def text(self) -> str:
        """The Prometheus text of this process."""
        snapshot = self.snapshot()
        totals = Totals()
        totals.add(snapshot)
        return render(families(totals, [snapshot]))


# ---------------------------------------------------------------------- summing and rendering
class Totals:
    """Counters and histograms summed over snapshots."""

    def __init__(self) -> None:
        self.jobs: dict[tuple[str, str], list[float]] = {}
        """``(queue, task)``: started, completed, failed, retried, cancelled, run_sum, *run_counts"""
        self.leases_renewed = 0
        self.leases_lost = 0
        self.stale_acks = 0
        self.round_trip = [0] * BUCKETS
        self.round_trip_sum = 0.0

    def add(self, snapshot: Snapshot, cap: LabelCap | None = None) -> None:
        """Add one snapshot; ``cap`` re-applies the task label cap across processes (each
        capped its own names, but the union of several may be longer)."""
        for queue, task, *figures in snapshot["jobs"]:
            *counters, run_sum, counts = figures
            label = cap(task) if cap is not None else task
            row = self.jobs.get((queue, label))
            if row is None:
                row = self.jobs[queue, label] = [0.0] * (6 + BUCKETS)
            for index, value in enumerate((*counters, run_sum, *counts)):
                row[index] += value
        self.leases_renewed += snapshot["leases_renewed"]
        self.leases_lost += snapshot["leases_lost"]
        self.stale_acks += snapshot["stale_acks"]
        for index, count in enumerate(snapshot["redis_round_trip"]):
            self.round_trip[index] += count
        self.round_trip_sum += snapshot["redis_round_trip_sum"]

    def merge(self, other: Totals) -> None:
        for key, values in other.jobs.items():
            row = self.jobs.setdefault(key, [0.0] * (6 + BUCKETS))
            for index, value in enumerate(values):
                row[index] += value
        self.leases_renewed += other.leases_renewed
        self.leases_lost += other.leases_lost
        self.stale_acks += other.stale_acks
        self.round_trip = [a + b for a, b in zip(self.round_trip, other.round_trip, strict=True)]
        self.round_trip_sum += other.round_trip_sum


# A counter's family is named with its _total, as its samples are: in the text format (0.0.4)
# HELP and TYPE name the samples exactly (promtool's lint: "no help text" otherwise), unlike
# OpenMetrics, where they name the family without the suffix.
_JOB_COUNTERS = (
    ("conveyor_worker_jobs_started_total", "Jobs this worker started."),
    (
        "conveyor_worker_jobs_completed_total",
        "Jobs whose function returned; their results were sent to Redis.",
    ),
    ("conveyor_worker_jobs_failed_total", "Jobs Redis recorded as failed for good (dead-lettered)."),
    ("conveyor_worker_jobs_retried_total", "Failed attempts Redis recorded for a retry."),
    ("conveyor_worker_jobs_cancelled_total", "Running jobs Redis recorded as cancelled."),
)


def families(totals: Totals, live: Sequence[Snapshot]) -> list[Family]:
    """The metrics: counters and histograms from ``totals``; gauges from the ``live``
    processes' snapshots, summed (the lag and the heartbeat's age: the worst of them)."""
    counters = [Family(name, "counter", text) for name, text in _JOB_COUNTERS]
    run = Family("conveyor_worker_job_run_seconds", "histogram", "How long jobs ran, start to outcome.")
    for (queue, task), row in sorted(totals.jobs.items()):
        labels: Labels = (("queue", queue), ("task", task))
        for family, value in zip(counters, row[:5], strict=True):
            family.add(value, labels, suffix="")
        run.histogram(BOUNDS_SECONDS, row[6:], row[5], labels)
    in_flight = Family(
        "conveyor_worker_jobs_in_flight", "gauge", "Jobs running now (started, not yet ended)."
    )
    by_queue: dict[str, int] = {}
    for snapshot in live:
        for queue, count in snapshot["in_flight"].items():
            by_queue[queue] = by_queue.get(queue, 0) + count
    for queue, count in sorted(by_queue.items()):
        in_flight.add(count, (("queue", queue),))

    def summed(key: str) -> float:
        return float(sum(snapshot[key] for snapshot in live))  # type: ignore[literal-required]

    def worst(key: str) -> float:
        return max((float(snapshot[key]) for snapshot in live), default=0.0)  # type: ignore[literal-required]

    round_trip = Family(
        "conveyor_worker_redis_round_trip_seconds",
        "histogram",
        "Round trips to Redis: acknowledgement batches and heartbeat rounds, send to answer.",
    )
    round_trip.histogram(BOUNDS_SECONDS, totals.round_trip, totals.round_trip_sum)
    return [
        *counters,
        run,
        in_flight,
        _single("conveyor_worker_concurrency", "gauge", "Jobs run at once, at most.", summed("concurrency")),
        _single(
            "conveyor_worker_lease_renewals_total",
            "counter",
            "Leases of held jobs renewed by the heartbeat.",
            totals.leases_renewed,
        ),
        _single(
            "conveyor_worker_leases_lost_total",
            "counter",
            "Running jobs whose lease ran out: re-delivered, so this worker stopped them.",
            totals.leases_lost,
        ),
        _single(
            "conveyor_worker_stale_acks_total",
            "counter",
            "Outcomes Redis refused: the job's lease had run out and a newer attempt owns it.",
            totals.stale_acks,
        ),
        round_trip,
        _single(
            "conveyor_worker_event_loop_lag_seconds",
            "gauge",
            "How late the event loop last woke for a timer.",
            worst("loop_lag"),
        ),
        _single(
            "conveyor_worker_threads_busy", "gauge", "Threads running sync jobs.", summed("threads_busy")
        ),
        _single(
            "conveyor_worker_threads_max", "gauge", "Threads for sync jobs, at most.", summed("threads_max")
        ),
        _single(
            "conveyor_worker_heartbeat_age_seconds",
            "gauge",
            "Seconds since the heartbeat last reached Redis.",
            worst("heartbeat_age"),
        ),
        _single("conveyor_worker_up", "gauge", "1 while the worker process serves this.", 1),
    ]


def _single(name: str, kind: Kind, text: str, value: float) -> Family:
    family = Family(name, kind, text)
    family.add(value, suffix="")
    return family

"""Figures true for the whole fleet, read from Redis when Prometheus scrapes.

Whichever process serves them -- ``conveyor api`` at ``/metrics``, or ``conveyor metrics``,
a small exporter of its own -- reads the same keys: the counts and histograms the scripts
keep per queue (:mod:`conveyor.ops.metrics`), the worker registry, and the server's INFO.
So two API replicas scraped side by side export the same counters, and a counter never
restarts from zero when a worker does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .. import ops
from ..ops.keys import addressable
from . import redis_health
from .buckets import BOUNDS_SECONDS
from .exposition import Family, Labels

if TYPE_CHECKING:
    from ..client import AsyncClient

log = logging.getLogger("conveyor.metrics")

READ_TIMEOUT = 8.0
"""Seconds a scrape waits for Redis before it answers ``conveyor_redis_up 0``: within
Prometheus' default scrape timeout (10 s), so a Redis that hangs shows as down, not as a
scrape that failed."""

_OUTCOME_HELP = {
    "completed": "Jobs completed, by any worker of the fleet.",
    "failed": "Jobs that failed for good (dead-lettered), by any worker of the fleet.",
    "retried": "Failed or lost attempts sent to run again.",
    "cancelled": "Jobs cancelled before or while they ran.",
}


async def collect(client: AsyncClient, queues: Sequence[str] | None = None) -> list[Family]:
    """Every fleet family, for the given queues (default: every queue Redis knows). When
    Redis does not answer, only ``conveyor_redis_up 0``: a scrape that fails outright would
    look like the exporter being down, not Redis."""
    began = time.perf_counter()
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            families = await _read(client, queues)
    except Exception as exc:  # whatever broke, or a Redis that does not answer: it is not there
        log.warning("could not read the fleet's figures from Redis: %s", exc or type(exc).__name__)
        families = redis_health.families(None)
    scrape = Family(
        "conveyor_scrape_duration_seconds", "gauge", "How long reading these figures from Redis took."
    )
    scrape.add(time.perf_counter() - began)
    families.append(scrape)
    return families


async def _read(client: AsyncClient, queues: Sequence[str] | None) -> list[Family]:
    listed = queues if queues is not None else await client.queues()
    names = sorted(addressable(listed, lambda exc: log.warning("the metrics leave out a queue: %s", exc)))
    figures, workers, health = await asyncio.gather(
        asyncio.gather(*(client.figures(name, minutes=0) for name in names)),
        client.workers(),
        redis_health.aread(client),
    )
    return queue_families(list(figures), workers) + redis_health.families(health)


def queue_families(figures: Sequence[ops.QueueFigures], workers: Sequence[dict[str, Any]]) -> list[Family]:
    jobs = Family("conveyor_queue_jobs", "gauge", "Jobs in the queue, by state.")
    oldest = Family(
        "conveyor_queue_oldest_waiting_age_seconds",
        "gauge",
        "How long the job waiting longest has waited to start (0 when none waits).",
    )
    due = Family("conveyor_queue_delayed_due_jobs", "gauge", "Delayed jobs already due, not yet started.")
    paused = Family("conveyor_queue_paused", "gauge", "1 while the queue is paused.")
    concurrency = Family(
        "conveyor_queue_concurrency_limit",
        "gauge",
        "The queue's limit of jobs running at once.",
    )
    rate_jobs = Family("conveyor_queue_rate_limit_jobs", "gauge", "The queue's rate limit: jobs per window.")
    rate_window = Family(
        "conveyor_queue_rate_limit_window_seconds", "gauge", "The queue's rate limit: the window."
    )
    suspects = Family(
        "conveyor_queue_suspects",
        "gauge",
        "Jobs that lost their worker too often, waiting to run alone.",
    )
    dead = Family("conveyor_queue_dead_letters", "gauge", "Dead-lettered (failed) jobs kept in Redis.")
    alive = Family("conveyor_queue_workers", "gauge", "Live workers serving the queue.")
    slots = Family(
        "conveyor_queue_worker_concurrency",
        "gauge",
        "Jobs the workers serving the queue may run at once.",
    )
    outcomes = {
        outcome: Family(f"conveyor_queue_jobs_{outcome}", "counter", help_text)
        for outcome, help_text in _OUTCOME_HELP.items()
    }
    wait = Family(
        "conveyor_queue_wait_seconds",
        "histogram",
        "From enqueued (or due, or handed back) to started, across the fleet.",
    )
    run = Family("conveyor_queue_run_seconds", "histogram", "How long jobs ran, as their workers timed them.")

    serving: dict[str, tuple[int, int]] = {}
    for worker in workers:
        for name in str(worker.get("queues", "")).split(","):
            count, total = serving.get(name, (0, 0))
            serving[name] = (count + 1, total + int(worker.get("concurrency") or 0))

    for queue in figures:
        label: Labels = (("queue", queue.queue),)
        for state, count in queue.counts.items():
            jobs.add(count, (*label, ("state", state)))
        oldest.add(queue.oldest_waiting_s, label)
        due.add(queue.delayed_due, label)
        paused.add(1 if queue.paused else 0, label)
        if queue.concurrency is not None:
            concurrency.add(queue.concurrency, label)
        if queue.rate_max is not None and queue.rate_window_s is not None:
            rate_jobs.add(queue.rate_max, label)
            rate_window.add(queue.rate_window_s, label)
        suspects.add(queue.suspects, label)
        dead.add(queue.counts["failed"], label)
        count, total = serving.get(queue.queue, (0, 0))
        alive.add(count, label)
        slots.add(total, label)
        for outcome, family in outcomes.items():
            family.add(getattr(queue.totals, outcome), label)
        wait.histogram(BOUNDS_SECONDS, queue.totals.wait.counts, queue.totals.wait.sum_seconds, label)
        run.histogram(BOUNDS_SECONDS, queue.totals.run.counts, queue.totals.run.sum_seconds, label)
    return [
        jobs,
        oldest,
        due,
        paused,
        concurrency,
        rate_jobs,
        rate_window,
        suspects,
        dead,
        alive,
        slots,
        *outcomes.values(),
        wait,
        run,
    ]

"""Redis down and back while long jobs run on live workers (issue 20).

Two worker processes run jobs longer than their lease; Redis (``appendfsync always``) is
SIGKILLed while they run, left down for half a lease or for 1.6 leases, and started again
from its data. With a fast sweep (lease 2 s, sweep 0.25 s) and with the worker's default
settings. Before the fix, an outage longer than the lease ended with the sweep re-delivering
jobs their live worker still ran, and the worker losing each of them again and again until
it was dead-lettered "worker lost 3 times". [0 jobs lost, 0 false dead letters (no job
dead-lettered, none counted a crash), each job started at most once more per outage, every
worker alive and claiming within 5 s of the restart]

Each outage has a batch of long jobs of its own, started before the kill, with leases of
assorted ages when Redis goes (it goes 0.3 lease after they start). Their lengths spread
their ends from 0.3 lease before the restart (their results wait in the worker for Redis)
to 0.7 lease after it, and are never shorter than 1.1 lease. After each restart short jobs
are enqueued, one every 0.1 s, until every worker has started a job again. The next
outage comes as soon as that is done, so at full size long jobs span several outages.

Fast: one outage of 20 long jobs; the defaults profile at half the default lease and sweep
(``CONVEYOR_CHAOS_OUTAGE_SCALE``, 0.5), to keep ``make test`` short. ``make chaos``:
``CONVEYOR_CHAOS_OUTAGES`` (5) outages of ``CONVEYOR_CHAOS_OUTAGE_JOBS`` (100) long jobs
each, the defaults profile at the real defaults (scale 1).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import ledger
import pytest
from harness import Workers, final_states, full_only, knob, ledger_work, report, settled
from ledger import LedgerWriter

from conveyor import Client
from conveyor.errors import RETRYABLE_REDIS_ERRORS
from conveyor.task import Task, TaskCall
from conveyor.worker.settings import WorkerSettings

T = TypeVar("T")

DEFAULTS = WorkerSettings()
CLAIM_WITHIN_S = 5.0


def settings_of(profile: str) -> tuple[float, float]:
    """(lease, sweep_interval) of a profile, in seconds."""
    if profile == "fast-sweep":
        return 2.0, 0.25
    scale = knob("OUTAGE_SCALE", 0.5)
    return DEFAULTS.lease * scale, DEFAULTS.sweep_interval * scale


def retrying(call: Callable[[], T], timeout: float = 15.0) -> T:
    """``call()``, again while Redis is out of reach (the test's pooled connections predate
    the restart)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except RETRYABLE_REDIS_ERRORS:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def enqueue(client: Client, writer: LedgerWriter, calls: list[TaskCall[Any]]) -> list[str]:
    ids = [handle.id for handle in client.enqueue_many(calls)]
    writer.accepted(ids)
    return ids


def starts_after(records: ledger.Records, moment: float) -> dict[int, float]:
    """Each worker pid's first start of a job after ``moment``."""
    first: dict[int, float] = {}
    for runs in records.executions.values():
        for run in runs:
            if run.started > moment and run.started < first.get(run.pid, float("inf")):
                first[run.pid] = run.started
    return first


def wait_started(ledger_dir: Path, job_ids: Iterable[str], timeout: float) -> None:
    wanted = set(job_ids)
    deadline = time.monotonic() + timeout
    while not wanted <= ledger.read(ledger_dir).executions.keys():
        assert time.monotonic() < deadline, "the long jobs did not all start before the kill"
        time.sleep(0.05)


def every_worker_claims(
    client: Client,
    writer: LedgerWriter,
    work: Task[Any, int],
    ledger_dir: Path,
    pids: set[int],
    back: float,
    timeout: float = 15.0,
) -> float:
    """Enqueues a short job every 0.1 s until each worker has started a job since ``back``
    (the restart); returns the seconds from ``back`` to the last worker's first start, or
    inf. One at a time, since a worker woken by new work claims all that waits, and Redis
    wakes the workers blocked on the queue in turn."""
    while time.monotonic() < back + timeout:
        # A connection from before the kill fails; the next try takes a new one.
        with contextlib.suppress(*RETRYABLE_REDIS_ERRORS):
            enqueue(client, writer, [work.call(-1)])
        first = starts_after(ledger.read(ledger_dir), back)
        if pids <= first.keys():
            return max(first[pid] for pid in pids) - back
        time.sleep(0.1)
    return float("inf")


def lapsed_leases(client: Client, queue: str) -> int:
    """Leases already run out by Redis's clock (whatever its workers think)."""
    seconds, micros = retrying(lambda: client.transport.call("TIME"))
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    return int(retrying(lambda: client.transport.call("ZCOUNT", client.keys(queue).active, "-inf", now_ms)))


def crash_counts(client: Client, queue: str, job_ids: list[str]) -> dict[str, int]:
    """The crashes the sweep counted for each job (its hash's ``cr``: times re-delivered or
    dead-lettered as the job of a lost worker)."""
    prefix = client.keys(queue).job_prefix
    replies = client.transport.call_many([("HGET", prefix + job_id, "cr") for job_id in job_ids])
    return {job_id: int(reply or 0) for job_id, reply in zip(job_ids, replies, strict=True)}


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize(
    ("profile", "ratio"),
    [
        pytest.param("fast-sweep", 0.5, marks=full_only),
        ("fast-sweep", 1.6),
        pytest.param("defaults", 0.5, marks=full_only),
        ("defaults", 1.6),
    ],
    ids=[
        "fast-sweep-shorter-than-lease",
        "fast-sweep-longer-than-lease",
        "defaults-shorter-than-lease",
        "defaults-longer-than-lease",
    ],
)
def test_redis_outage_under_long_jobs_on_live_workers(
    profile: str, ratio: float, server_factory: Any, tmp_path: Path
) -> None:
    lease, sweep = settings_of(profile)
    outages = int(knob("OUTAGES", 1))
    per_outage = int(knob("OUTAGE_JOBS", 20))
    down = ratio * lease
    before_kill = 0.3 * lease
    shortest = max(1.1 * lease, before_kill + down - 0.3 * lease)
    longest = before_kill + down + 0.7 * lease
    sleeps = [shortest + (longest - shortest) * i / max(1, per_outage - 1) for i in range(per_outage)]

    server = server_factory(appendfsync="always")
    queue = f"chaos-outage-{profile}-{ratio}"
    work = ledger_work(queue)
    workers = Workers(
        server.url,
        queue,
        tmp_path,
        count=2,
        CHAOS_LEASE=lease,
        CHAOS_SWEEP=sweep,
        CHAOS_MAX_CRASHES=DEFAULTS.max_crashes,  # the harness's 1000 would hide dead letters
        # Room for every job on either worker, so no job waits for a slot (the default, 100,
        # in the fast variant).
        CHAOS_CONCURRENCY=max(DEFAULTS.concurrency, per_outage * outages + 50),
    )
    pids = {proc.pid for proc in workers.procs}
    writer = LedgerWriter(tmp_path, "producer")
    claims: list[float] = []
    lapsed: list[int] = []
    long_ids: list[str] = []
    try:
        with Client.from_url(server.url) as client:
            began = time.monotonic()
            for outage in range(outages):
                calls = [work.call(outage * per_outage + i, s) for i, s in enumerate(sleeps)]
                batch = retrying(partial(enqueue, client, writer, calls))
                long_ids += batch
                wait_started(tmp_path, batch, timeout=30)
                time.sleep(before_kill)
                server.kill()
                time.sleep(down)
                server.start()  # replays the AOF before it answers
                back = time.monotonic()
                lapsed.append(lapsed_leases(client, queue))
                claims.append(every_worker_claims(client, writer, work, tmp_path, pids, back))
            deadline = time.monotonic() + longest + 60
            while True:
                records = ledger.read(tmp_path)
                states = retrying(partial(final_states, client, queue, records))
                if settled(states) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            elapsed = time.monotonic() - began
            crashes = crash_counts(client, queue, list(records.accepted))
            alive = workers.alive()
    finally:
        writer.close()
        codes = workers.stop()

    result = ledger.check(records, states, {})
    starts = {job_id: len(records.executions.get(job_id, [])) for job_id in records.accepted}
    dead = sorted(job_id for job_id, state in states.items() if state == "failed")
    not_completed = {job_id: state for job_id, state in states.items() if state != "completed"}
    crashed = {job_id: count for job_id, count in crashes.items() if count}
    too_many = {job_id: n for job_id, n in starts.items() if n > 1 + outages}
    unfinished = [r for runs in records.executions.values() for r in runs if r.outcome != "ok"]
    report(
        f"redis-outage:{profile}:{ratio}xlease",
        {
            "jobs": len(long_ids),
            "probes": len(records.accepted) - len(long_ids),
            "lease_s": lease,
            "sweep_s": sweep,
            "outage_s": round(down, 2),
            "outages": outages,
            "leases_lapsed_at_restart": lapsed,
            **result.summary(),
            "false_dead_letters": len(dead),
            "crashes": sum(crashes.values()),
            "max_starts": max(starts.values(), default=0),
            "workers_resumed_s": round(max(claims), 2),
            "elapsed_s": round(elapsed, 1),
        },
    )
    assert alive and workers.exits == {} and workers.restarts == 0, "a worker process died"
    assert all(code == 0 for code in codes), f"exit codes on SIGTERM: {codes}"
    slow = [round(c, 2) for c in claims if c > CLAIM_WITHIN_S]
    assert not slow, f"seconds from a restart until every worker claimed again (per outage): {claims}"
    assert result.lost == [] and result.reverted == [], (
        f"lost {result.lost[:5]}, reverted {result.reverted[:5]}"
    )
    assert dead == [], f"{len(dead)} jobs of live workers dead-lettered, e.g. {dead[:5]}"
    assert not_completed == {}, f"{len(not_completed)} jobs not completed: {list(not_completed.items())[:5]}"
    assert too_many == {}, (
        f"jobs started more than 1 + {outages} (outages) times: {list(too_many.items())[:5]}"
    )
    assert crashed == {}, (
        f"{len(crashed)} jobs re-delivered as if their live worker were lost: {list(crashed.items())[:5]}"
    )
    assert result.extra_executions == 0 and result.overlaps == [], result.summary()
    assert unfinished == [] and records.anomalies == [], (unfinished[:5], records.anomalies[:5])

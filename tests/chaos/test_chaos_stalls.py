"""No false stalls (issue 5, test 3): busy jobs must not look like dead workers.

A sync task busy in pure Python for 3 x the lease (its thread holds the GIL most of the
time), and an async task that blocks the event loop for half a lease. Several worker
processes (two for spin, four for hog), so a live one is always sweeping. [0 re-deliveries:
every job ran exactly once]
Fast: 10 and 5 jobs; ``make chaos``: 1,000 and 1,000, the sizes of the issue
(``CONVEYOR_CHAOS_STALL_SPIN`` / ``_STALL_HOG``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import ledger
import pytest
from harness import Workers, final_states, finished, knob, report

from conveyor import Client, Tasks

LEASE = knob("STALL_LEASE", 2.0)


def stall_tasks(queue: str) -> tuple[Any, Any]:
    tasks = Tasks(queue=queue)

    @tasks.task
    def spin(seconds: float) -> int: ...

    @tasks.task
    async def hog(seconds: float) -> None: ...

    return spin, hog


def run_stall(
    kind: str,
    total: int,
    concurrency: int,
    processes: int,
    server_factory: Any,
    tmp_path: Path,
    stop_at_first_stall: bool,
) -> tuple[Any, list[Any], list[int]]:
    server = server_factory(appendonly=False)
    queue = f"chaos-stall-{kind}-{concurrency}"
    spin, hog = stall_tasks(queue)
    if kind == "spin":
        calls = [spin.call(3 * LEASE) for _ in range(total)]
    else:
        calls = [hog.call(LEASE / 2) for _ in range(total)]
    writer = ledger.LedgerWriter(tmp_path, "producer")
    with Client.from_url(server.url) as client:
        writer.accepted(h.id for h in client.enqueue_many(calls))
        workers = Workers(
            server.url,
            queue,
            tmp_path,
            count=processes,
            CHAOS_LEASE=LEASE,
            CHAOS_SWEEP=0.2,
            CHAOS_CONCURRENCY=concurrency,
            CHAOS_MAX_CRASHES=3,
        )
        events_key = client.keys(queue).events
        started = time.monotonic()
        try:
            while sum(finished(client, queue).values()) < total:
                assert workers.alive(), "no worker exits"
                assert time.monotonic() - started < 60 + total * 3 * LEASE, finished(client, queue)
                if (
                    stop_at_first_stall
                    and client.transport.call("XLEN", events_key)
                    and any("stalled" in e[1] for e in client.transport.call("XRANGE", events_key, "-", "+"))
                ):
                    break
                time.sleep(0.1)
            elapsed = time.monotonic() - started
            records = ledger.read(tmp_path)
            states = final_states(client, queue, records)
            events = client.transport.call("XRANGE", events_key, "-", "+")
        finally:
            codes = workers.stop()
    stalled = [e for e in events if "stalled" in e[1]]
    result = ledger.check(records, states, {})
    report(
        f"stall:{kind}x{concurrency}",
        {
            "jobs": total,
            "lease_s": LEASE,
            **result.summary(),
            "stalled_events": len(stalled),
            "elapsed_s": round(elapsed, 1),
        },
    )
    return result, stalled, codes


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize(
    ("kind", "concurrency", "processes", "size"),
    # Hogs run one at a time per process (they block its loop) and sleep: more processes.
    [("spin", 10, 2, knob("STALL_SPIN", 10)), ("hog", 1, 4, knob("STALL_HOG", 5))],
)
def test_busy_jobs_are_not_mistaken_for_dead_workers(
    kind: str, concurrency: int, processes: int, size: float, server_factory: Any, tmp_path: Path
) -> None:
    total = int(size)
    result, stalled, codes = run_stall(kind, total, concurrency, processes, server_factory, tmp_path, False)
    assert result.states == {"completed": total}
    assert stalled == [], "no lease ran out while its job was running"
    assert result.extra_executions == 0 and result.overlaps == []
    assert all(code == 0 for code in codes), codes


@pytest.mark.timeout(120)
def test_async_jobs_blocking_the_loop_one_after_another_keep_their_leases(
    server_factory: Any, tmp_path: Path
) -> None:
    """Six jobs each block one loop for half a lease: three leases in all. The leases are
    renewed from the heartbeat thread, which the blocked loop cannot starve (on the loop,
    the renewals waited for all of them and the jobs were re-delivered while they ran)."""
    server = server_factory(appendonly=False)
    queue = "chaos-stall-hog-add-up"
    _, hog = stall_tasks(queue)
    options = {"CHAOS_LEASE": LEASE, "CHAOS_SWEEP": 0.2, "CHAOS_MAX_CRASHES": 3}
    writer = ledger.LedgerWriter(tmp_path, "producer")
    with Client.from_url(server.url) as client:
        blocked = Workers(server.url, queue, tmp_path, count=1, CHAOS_CONCURRENCY=6, **options)
        # All six on one loop: the watcher below starts once they are claimed.
        writer.accepted(h.id for h in client.enqueue_many([hog.call(LEASE / 2) for _ in range(6)]))
        deadline = time.monotonic() + 30
        while client.counts(queue)["active"] < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        watcher = Workers(server.url, queue, tmp_path, count=1, CHAOS_CONCURRENCY=1, **options)
        try:
            while sum(finished(client, queue).values()) < 6 and time.monotonic() < deadline:
                time.sleep(0.1)
            events = client.transport.call("XRANGE", client.keys(queue).events, "-", "+")
            records = ledger.read(tmp_path)
            states = final_states(client, queue, records)
        finally:
            codes = blocked.stop() + watcher.stop()
    result = ledger.check(records, states, {})
    assert [e for e in events if "stalled" in e[1]] == []
    assert result.states == {"completed": 6}
    assert result.extra_executions == 0 and result.overlaps == []
    assert codes == [0, 0]

"""Cancellation cross-talk (issue 5, test 7): timeouts cancel handlers in the middle of Redis calls.

Each job loops on ECHO (multiplexed connection) and BLPOP (blocking connections) through a
transport shared by all jobs of the worker process, until its timeout (5-30 ms) cancels it
mid-call. [0 replies delivered to the wrong request; no leaked connections: the server's
client count stays bounded during the run and returns to where it was after]
Fast: 1,000 jobs; ``make chaos``: 10,000 (``CONVEYOR_CHAOS_CROSSTALK``).
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import ledger
import orjson
import pytest
import redis
from harness import Workers, final_states, finished, knob, report

from conveyor import Client, Tasks

SLOTS = 50


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_cancelled_redis_calls_never_cross_replies_or_leak_connections(
    server_factory: Any, tmp_path: Path
) -> None:
    total = int(knob("CROSSTALK", 1000))
    server = server_factory(appendonly=False)
    queue = "chaos-crosstalk"
    tasks = Tasks(queue=queue)

    @tasks.task
    async def chatter(n: int) -> None: ...

    rng = random.Random(7)
    raw = redis.Redis(port=server.port, password=server.password)
    baseline = raw.info("clients")["connected_clients"]
    writer = ledger.LedgerWriter(tmp_path, "producer")
    with Client.from_url(server.url) as client:
        calls = [chatter.with_options(timeout=rng.uniform(0.005, 0.03)).call(i) for i in range(total)]
        writer.accepted(h.id for h in client.enqueue_many(calls))
        workers = Workers(
            server.url, queue, tmp_path, count=1, CHAOS_CONCURRENCY=SLOTS, CHAOS_LOG_LEVEL="critical"
        )
        peak = 0
        started = time.monotonic()
        try:
            while sum(finished(client, queue).values()) < total:
                assert workers.alive()
                assert time.monotonic() - started < 60 + total / 20, finished(client, queue)
                peak = max(peak, raw.info("clients")["connected_clients"])
                time.sleep(0.05)
            elapsed = time.monotonic() - started
            records = ledger.read(tmp_path)
            states = final_states(client, queue, records)
            failed_ids = [job_id for job_id, state in states.items() if state == "failed"]
            reasons = {
                orjson.loads(raw.hget(client.keys(queue).job(job_id), "e") or b"{}").get("reason")
                for job_id in failed_ids
            }
        finally:
            codes = workers.stop()
    deadline = time.monotonic() + 5
    while raw.info("clients")["connected_clients"] > baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    after = raw.info("clients")["connected_clients"]
    result = ledger.check(records, states, {})
    report(
        "crosstalk",
        {
            "jobs": total,
            **result.summary(),
            "anomalies": len(records.anomalies),
            "peak_connections": peak,
            "connections_after": after - baseline,
            "elapsed_s": round(elapsed, 1),
        },
    )
    assert records.anomalies == [], records.anomalies[:5]
    assert result.states == {"failed": total} and reasons == {"timeout"}, "every job ended by its timeout"
    assert result.executions == total
    # One multiplexed connection, at most one blocking connection per slot, the worker's own.
    assert peak <= baseline + SLOTS + 10, peak
    assert after == baseline, "no connection outlives the worker"
    assert codes == [0]

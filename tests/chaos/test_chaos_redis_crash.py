"""Redis SIGKILLed under load and restarted from its AOF (issue 5, test 5).

Jobs are enqueued at a steady rate and run by two worker processes while Redis is
SIGKILLed, left down for a second, and started again from its append-only file, with
``appendfsync always`` and with ``everysec``. [always: 0 accepted jobs lost, no completed
job reverted; everysec: losses only among jobs accepted in the last 2 s before the kill;
producers and workers resume within 5 s of Redis returning, with no worker restart]
Fast: 3,000 jobs at 300/s; ``make chaos``: ``CONVEYOR_CHAOS_AOF_JOBS`` (50,000).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import ledger
import pytest
from harness import Producer, Workers, final_states, full_only, knob, ledger_work, report, settled
from redis.exceptions import ConnectionError as RedisConnectionError

from conveyor import Client


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("fsync", [pytest.param("always", marks=full_only), "everysec"])
def test_redis_sigkill_and_aof_restart_under_load(fsync: str, server_factory: Any, tmp_path: Path) -> None:
    total = int(knob("AOF_JOBS", 3000))
    rate = knob("AOF_RATE", 300)
    server = server_factory(appendfsync=fsync)
    queue = f"chaos-aof-{fsync}"
    work = ledger_work(queue)

    errors: list[BaseException] = []
    producer = Producer(
        server.url, tmp_path, [work.call(i) for i in range(total)], rate=rate, on_error=errors.append
    )
    workers = Workers(server.url, queue, tmp_path, count=2, CHAOS_LEASE=2, CHAOS_SWEEP=0.5)
    try:
        with Client.from_url(server.url) as client:
            keys = client.keys(queue)
            started = time.monotonic()
            producer.start()
            time.sleep(total / rate / 3)
            completed_before = set(client.transport.call("ZRANGE", keys.completed, 0, -1))
            server.kill()
            killed = time.monotonic()
            time.sleep(1.0)
            server.start()  # replays the AOF before it answers
            back = time.monotonic()

            def completed() -> int:
                try:
                    return int(client.transport.call("ZCARD", keys.completed))
                except RedisConnectionError:  # a pooled connection from before the kill
                    return -1

            while completed() <= len(completed_before):
                assert time.monotonic() - back < 30, "workers did not resume"
                time.sleep(0.02)
            workers_resumed = time.monotonic() - back
            producer.join(120 + total / rate)
            deadline = time.monotonic() + 120
            while True:
                records = ledger.read(tmp_path)
                states = final_states(client, queue, records)
                if settled(states) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            elapsed = time.monotonic() - started
            completed_after = set(client.transport.call("ZRANGE", keys.completed, 0, -1))
    finally:
        codes = workers.stop()
    result = ledger.check(records, states, {})
    reverted = completed_before - completed_after
    accepted_after = [t for t in records.accepted.values() if t > back]
    producers_resumed = min(accepted_after) - back if accepted_after else float("inf")
    lost_ages = [killed - records.accepted[job_id] for job_id in result.lost + result.reverted]
    report(
        f"redis-kill:{fsync}",
        {
            "jobs": total,
            "producer_errors": len(errors),
            **result.summary(),
            "completed_reverted": len(reverted),
            "lost_newest_age_s": round(min(lost_ages), 2) if lost_ages else None,
            "lost_oldest_age_s": round(max(lost_ages), 2) if lost_ages else None,
            "workers_resumed_s": round(workers_resumed, 2),
            "producers_resumed_s": round(producers_resumed, 2),
            "elapsed_s": round(elapsed, 1),
        },
    )
    assert all(isinstance(e, RedisConnectionError) for e in errors), errors[:3]
    assert result.stuck == []
    if fsync == "always":
        assert result.lost == [] and result.reverted == [] and reverted == set()
    else:  # at most the last second or so of writes; the issue allows 2 s
        assert all(age <= 2.0 for age in lost_ages), sorted(lost_ages)[-5:]
    assert workers_resumed <= 5.0 and producers_resumed <= 5.0
    assert workers.exits == {} and workers.restarts == 0, "the same worker processes went on"
    assert all(code == 0 for code in codes), codes

"""A worker hard-exits at every transition point (issue 5, test 2), checked against the ledger.

``CONVEYOR_FAULT_POINT`` (see :mod:`conveyor.dev.faults`) makes worker processes of one slot
each ``os._exit`` at a named point with probability 0.2; every exited worker is replaced,
until ``CONVEYOR_CHAOS_CRASH_RUNS`` crashes happened at that point (5 in ``make test``,
200 in ``make chaos``). Then the rest drains on workers without crash points.
[lost 0, stuck 0, at most 1 extra execution per crash]
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import ledger
import pytest
from harness import Workers, final_states, finished, knob, report

from conveyor import Client, Tasks
from conveyor.dev.faults import FAULT_EXIT_CODE, POINTS

PROBABILITY = 0.2


def chaos_tasks(queue: str) -> tuple[Any, Any]:
    tasks = Tasks(queue=queue)

    @tasks.task
    async def work(n: int, sleep: float = 0.0) -> int: ...

    @tasks.task
    async def flaky(n: int, failures: int = 1) -> int: ...

    return work, flaky


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("point", POINTS)
def test_crash_at_every_transition_point_loses_nothing(
    point: str, server_factory: Any, tmp_path: Path
) -> None:
    runs = int(knob("CRASH_RUNS", 5))
    # Twice the jobs the crashes need on average, and at least 100: with 50 jobs, about one
    # run in 50 met fewer than 5 crashes (binomial: 1.8 %; 3.7e-6 with 100) and failed the
    # check below -- a clean-clone CI run did, with 3 crashes.
    total = max(100, int(runs / PROBABILITY * 2))
    server = server_factory(appendonly=False)
    queue = f"chaos-{point.replace('_', '-')}"
    work, flaky = chaos_tasks(queue)
    if point == "in_retry":
        calls = [flaky.call(i, 1) for i in range(total)]  # fails once, then succeeds
        runs_per_job = 2
    elif point == "in_promotion":
        calls = [work.with_options(delay=0.2).call(i) for i in range(total)]
        runs_per_job = 1
    else:
        calls = [work.call(i) for i in range(total)]
        runs_per_job = 1
    writer = ledger.LedgerWriter(tmp_path, "producer")
    with Client.from_url(server.url) as client:
        writer.accepted(h.id for h in client.enqueue_many(calls))
        workers = Workers(
            server.url,
            queue,
            tmp_path,
            count=2,
            CONVEYOR_FAULT_POINT=f"{point}:{PROBABILITY}",
            CHAOS_LEASE=1,
            CHAOS_SWEEP=0.2,
            CHAOS_CONCURRENCY=1,
        )
        started = time.monotonic()
        try:
            deadline = started + 60 + runs * 3
            while True:
                workers.restart_exited()
                if len(workers.exits) >= runs:
                    workers.disarm()
                counts = finished(client, queue)
                if counts["completed"] == total:
                    break
                assert time.monotonic() < deadline, f"not drained: {counts}, {len(workers.exits)} crashes"
                time.sleep(0.05)
            elapsed = time.monotonic() - started
            records = ledger.read(tmp_path)
            states = final_states(client, queue, records)
        finally:
            codes = workers.stop()
    crashes = len(workers.exits)
    result = ledger.check(records, states, workers.kills)
    extra = result.executions - runs_per_job * total
    delays = ledger.redelivery_delays(records, workers.kills)  # from the exit, as seen by the test
    report(
        f"crash:{point}",
        {
            "jobs": total,
            "crashes": crashes,
            "restarts": workers.restarts,
            **result.summary(),
            "extra_vs_plan": extra,
            "redelivery_p50_s": round(ledger.percentile(delays, 0.5), 2) if delays else None,
            "redelivery_max_s": round(max(delays), 2) if delays else None,
            "elapsed_s": round(elapsed, 1),
        },
    )
    assert crashes >= runs
    assert set(workers.exits.values()) == {FAULT_EXIT_CODE}, "every exit was a planned crash"
    assert result.lost == [] and result.stuck == [] and result.reverted == []
    assert result.states == {"completed": total}
    assert extra >= 0
    # A crash re-runs the job it held and the jobs it finished whose batched ack had not
    # gone out yet -- each of them once: no job runs more than once more per crash of a
    # worker that ran it.
    for job_id, job_runs in records.executions.items():
        crashed_holders = sum(1 for run in job_runs if run.pid in workers.exits)
        assert len(job_runs) - runs_per_job <= crashed_holders, (job_id, job_runs)
    assert result.overlaps == []
    assert all(code == 0 for code in codes), codes

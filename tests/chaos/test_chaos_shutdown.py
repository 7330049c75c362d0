"""Graceful shutdown with 500 jobs in flight (issue 5, test 4).

One worker process runs 500 jobs at once (sleeps of 0.5-30 s) and gets SIGTERM with a
10 s grace. [exit within grace + 2 s; lost 0; what finished within the grace is completed,
the rest is back in waiting at once -- none left active for the sweep]
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path
from typing import Any

import ledger
import pytest
from harness import Workers, final_states, ledger_work, report

from conveyor import Client

GRACE = 10.0
IN_FLIGHT = 500


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigterm_with_500_jobs_in_flight(server_factory: Any, tmp_path: Path) -> None:
    server = server_factory(appendonly=False)
    queue = "chaos-shutdown"
    work = ledger_work(queue)

    rng = random.Random(4)
    writer = ledger.LedgerWriter(tmp_path, "producer")
    with Client.from_url(server.url) as client:
        calls = [work.call(i, round(rng.uniform(0.5, 30), 2)) for i in range(IN_FLIGHT)]
        writer.accepted(h.id for h in client.enqueue_many(calls))
        workers = Workers(
            server.url, queue, tmp_path, count=1, CHAOS_CONCURRENCY=IN_FLIGHT, CHAOS_GRACE=GRACE
        )
        deadline = time.monotonic() + 30
        while client.counts(queue)["active"] < IN_FLIGHT:
            assert time.monotonic() < deadline, client.counts(queue)
            time.sleep(0.05)
        [proc] = workers.procs
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        code = proc.wait(timeout=GRACE + 10)
        took = time.monotonic() - signalled
        counts = client.counts(queue)
        records = ledger.read(tmp_path)
        states = final_states(client, queue, records)
    result = ledger.check(records, states, {})
    report(
        "shutdown",
        {
            "jobs": IN_FLIGHT,
            "exit_s": round(took, 2),
            **result.summary(),
            "stuck": None,  # by design: the unfinished jobs wait for the next worker
            "handed_back": counts["waiting"],
            "grace_s": GRACE,
        },
    )
    assert code == 0
    assert took <= GRACE + 2
    assert counts["active"] == 0, "unfinished jobs handed back at once, not left to the sweep"
    assert counts["completed"] + counts["waiting"] == IN_FLIGHT
    assert 0 < counts["completed"] < IN_FLIGHT
    assert result.lost == []
    finished_in_grace = sum(1 for runs in records.executions.values() if any(r.finished for r in runs))
    assert finished_in_grace == counts["completed"], "what finished within the grace is completed"

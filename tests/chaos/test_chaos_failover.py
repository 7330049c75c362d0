"""Sentinel failover under load (issue 5, test 8).

1 primary, 2 replicas, 3 sentinels (down-after 1 s). Jobs are enqueued through the
Sentinel URL and run by two worker processes while the primary dies (SIGKILL) or a
failover is forced (``SENTINEL FAILOVER``: the old primary lives on, and goes on accepting
writes until the sentinels demote it, seconds later; whatever it accepts after the replica
was promoted is wiped when it resynchronises). The sentinels promote a replica.

Conveyor's Sentinel clients (``conveyor.redis.sentinel``) hold their commands from the moment
the sentinel running the failover announces it (``+try-failover``, about 100 ms before it
promotes the replica) until it names the new primary, then move every connection there.
So a forced failover loses nothing, plain or durable, in our runs; the bound asserted for
plain enqueues is the one batch a producer may have in flight when the announcement comes
(which the promotion would have to overtake). With ``durable_replicas=1`` an enqueue
returns only once a replica has the job, and nothing accepted may be lost, SIGKILL or
forced. (Asking for 2 replicas would fail every enqueue after a SIGKILL failover: the new
primary has one replica left -- ``NotDurable``, as it should.) ``forced-far``: the clients'
URL leaves out the sentinel that runs the failover, so they hear of it only when it names
the new primary, about a second after the promotion; what they write in between is lost,
durable or not. Measured and reported.
[clients on the new primary within down-after + 5 s; workers continue without restart;
loss reported; durable: 0 lost; forced, plain: at most one batch lost]
Fast: 1,500 jobs at 300/s; ``make chaos``: ``CONVEYOR_CHAOS_FAILOVER_JOBS`` (20,000).
"""

from __future__ import annotations

import time
from pathlib import Path

import ledger
import pytest
from harness import Producer, Workers, final_states, full_only, knob, ledger_work, report, settled
from redis.exceptions import RedisError
from sentinels import DOWN_AFTER_MS, SentinelGroup

from conveyor import Client
from conveyor.errors import ConveyorError


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize(
    ("how", "durable"),
    [
        pytest.param("kill", 0, marks=full_only),
        ("kill", 1),
        ("forced", 0),
        pytest.param("forced", 1, marks=full_only),
        pytest.param("forced-far", 0, marks=full_only),
        pytest.param("forced-far", 1, marks=full_only),
    ],
    ids=["kill", "kill-durable", "forced", "forced-durable", "forced-far", "forced-far-durable"],
)
def test_sentinel_failover_under_load(how: str, durable: int, tmp_path: Path) -> None:
    total = int(knob("FAILOVER_JOBS", 1500))
    rate = knob("FAILOVER_RATE", 300)
    ledger_dir = tmp_path / "ledger"
    ledger_dir.mkdir()
    group = SentinelGroup(tmp_path / "servers")
    queue = f"chaos-failover-{how}-{durable}"
    work = ledger_work(queue)

    # forced-far: the clients do not know the sentinel that runs the failover (reported only).
    url = group.far_url if how == "forced-far" else group.url
    errors: list[BaseException] = []
    producer = Producer(
        url,
        ledger_dir,
        [work.call(i) for i in range(total)],
        rate=rate,
        on_error=errors.append,
        durable_replicas=durable,
        durable_timeout_ms=1000,
    )
    workers = Workers(url, queue, ledger_dir, count=2, CHAOS_LEASE=2, CHAOS_SWEEP=0.5)
    try:
        producer.start()
        time.sleep(total / rate / 3)
        old_port = group.primary.port
        if how == "kill":
            group.primary.kill()
        else:  # SENTINEL FAILOVER: the old primary lives on and becomes a replica
            group.force_failover()
        killed = time.monotonic()
        while group.current_primary_port() == old_port:
            assert time.monotonic() - killed < 30, "no failover"
            time.sleep(0.05)
        promoted = time.monotonic() - killed
        producer.join(120 + total / rate)
        assert not producer.is_alive()
        with Client.from_url(group.url) as client:
            deadline = time.monotonic() + 60
            while True:
                records = ledger.read(ledger_dir)
                states = final_states(client, queue, records)
                if settled(states) or time.monotonic() > deadline:
                    break
                assert workers.alive(), "no worker exits"
                time.sleep(0.5)
        elapsed = time.monotonic() - killed
    finally:
        codes = workers.stop()
        group.stop()
    result = ledger.check(records, states, {})
    accepted_after = sorted(t for t in records.accepted.values() if t > killed)
    finished_after = sorted(
        r.finished for runs in records.executions.values() for r in runs if r.finished and r.finished > killed
    )
    producers_back = accepted_after[0] - killed if accepted_after else float("inf")
    workers_back = finished_after[0] - killed if finished_after else float("inf")
    report(
        f"failover:{how}{':durable' if durable else ''}",
        {
            "jobs": total,
            "producer_errors": len(errors),
            "error_types": sorted({type(e).__name__ for e in errors}),
            **result.summary(),
            "promoted_after_s": round(promoted, 2),
            "producers_resumed_s": round(producers_back, 2),
            "workers_resumed_s": round(workers_back, 2),
            "elapsed_s": round(elapsed, 1),
        },
    )
    assert all(isinstance(e, RedisError | ConveyorError) for e in errors), errors[:3]
    limit = DOWN_AFTER_MS / 1000 + 5
    assert producers_back <= limit and workers_back <= limit
    assert workers.exits == {} and workers.restarts == 0
    assert result.stuck == []
    gone = len(result.lost) + len(result.reverted)
    if how == "forced-far":
        pass  # measured and reported: see RELIABILITY.md
    elif durable:
        assert gone == 0, "a durable enqueue survives the failover"
    elif how == "forced":
        # Before the clients followed the sentinels' announcement: 11,000 of 20,000 lost.
        assert gone <= producer.batch, f"{gone} accepted jobs lost: more than the batch in flight"
    assert all(code == 0 for code in codes), codes

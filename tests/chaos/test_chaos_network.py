"""Network faults between Conveyor and Redis (issue 5, test 6), through ``netproxy.NetProxy``.

Producers and two worker processes reach Redis only through the proxy, which adds
latency, resets every connection twice, then drops into a blackhole (3 s here, 20 s in
``make chaos``: ``CONVEYOR_CHAOS_BLACKHOLE``) while jobs flow. [lost 0; a producer call
either succeeds or raises a typed error (a reset; in a blackhole longer than its 5 s
``socket_timeout``, a timeout) within that timeout, it never drops a job silently; workers
resume within 5 s of heal; no worker exits; a worker whose connections went half-open
notices within its socket timeout and goes on]
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import ledger
import pytest
from harness import Producer, Workers, final_states, knob, ledger_work, report, settled
from netproxy import NetProxy
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from conveyor import Client


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_latency_resets_and_a_blackhole_lose_nothing(server_factory: Any, tmp_path: Path) -> None:
    total = int(knob("NET_JOBS", 2000))
    rate = knob("NET_RATE", 200)
    blackhole = knob("BLACKHOLE", 3.0)
    server = server_factory(appendonly=False)
    proxy = NetProxy(server.port)
    via_proxy = proxy.url_for(server.url, server.port)
    queue = "chaos-network"
    work = ledger_work(queue)

    errors: list[BaseException] = []
    # The producer gives Redis 5 s to answer (the default is 60 s); the workers keep 60 s.
    producer = Producer(
        via_proxy + "?socket_timeout=5",
        tmp_path,
        [work.call(i) for i in range(total)],
        rate=rate,
        on_error=errors.append,
    )
    workers = Workers(via_proxy, queue, tmp_path, count=2, CHAOS_LEASE=2, CHAOS_SWEEP=0.5)
    resets = 0
    try:
        with Client.from_url(server.url) as direct:  # the test itself does not go through the proxy
            completed_key = direct.keys(queue).completed

            def completed() -> int:
                return int(direct.transport.call("ZCARD", completed_key))

            started = time.monotonic()
            producer.start()
            time.sleep(1)
            proxy.latency = 0.02
            time.sleep(2)
            proxy.latency = 0.0
            resets += proxy.reset()
            time.sleep(1)
            resets += proxy.reset()
            time.sleep(1)
            proxy.blackhole(True)
            time.sleep(blackhole)
            before = completed()
            proxy.blackhole(False)
            healed = time.monotonic()
            while completed() == before:
                assert time.monotonic() - healed < 30, "workers did not resume"
                time.sleep(0.02)
            resumed = time.monotonic() - healed
            producer.join(120 + total / rate)
            assert not producer.is_alive()
            deadline = time.monotonic() + 120
            while True:
                records = ledger.read(tmp_path)
                states = final_states(direct, queue, records)
                if settled(states) or time.monotonic() > deadline:
                    break
                assert workers.alive(), "no worker exits"
                time.sleep(0.5)
            elapsed = time.monotonic() - started
    finally:
        codes = workers.stop()
        proxy.close()
    result = ledger.check(records, states, {})
    report(
        "network",
        {
            "jobs": total,
            "resets": resets,
            "blackhole_s": blackhole,
            "producer_errors": len(errors),
            "producer_error_after_max_s": round(max(producer.error_after, default=0.0), 2),
            **result.summary(),
            "resume_after_heal_s": round(resumed, 2),
            "elapsed_s": round(elapsed, 1),
        },
    )
    assert all(isinstance(e, RedisConnectionError | RedisTimeoutError) for e in errors), errors
    assert max(producer.error_after, default=0.0) <= 5.0 + 1.0, "a typed error within its timeout"
    assert result.accepted + 50 * len(errors) >= total
    assert result.lost == [] and result.stuck == [] and result.reverted == []
    assert set(result.states) == {"completed"}
    assert resumed <= 5.0
    assert workers.exits == {} and workers.restarts == 0
    assert all(code == 0 for code in codes), codes


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_worker_recovers_from_half_open_connections(server_factory: Any, tmp_path: Path) -> None:
    """Every connection of an idle worker goes silent (the peer vanished): it must notice and
    reconnect, not wait forever in the BZPOPMIN it had sent."""
    server = server_factory(appendonly=False)
    proxy = NetProxy(server.port)
    queue = "chaos-half-open"
    work = ledger_work(queue)

    # Redis gets 3 s to answer (beyond a blocking command's own wait) before a connection
    # counts as dead: the default is 60 s.
    url = proxy.url_for(server.url, server.port) + "?socket_timeout=3"
    workers = Workers(url, queue, tmp_path, count=1)
    try:
        with Client.from_url(server.url) as direct:
            first = direct.enqueue(work, 1)
            assert first.result(timeout=15) == 1  # the worker is up and idle, blocked in Redis
            time.sleep(0.5)
            assert proxy.half_open() >= 2
            later = direct.enqueue(work, 2)
            took = time.monotonic()
            assert later.result(timeout=20) == 2, "picked up within 20 s"
            report("half-open", {"picked_up_after_s": round(time.monotonic() - took, 2)})
    finally:
        workers.stop(timeout=5)
        proxy.close()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_silent_heartbeat_connection_does_not_cost_a_running_job_its_lease(
    server_factory: Any, tmp_path: Path
) -> None:
    """The connections of a worker running a job go half-open. Its heartbeat gives up on the
    silent one after a third of the lease (not the URL's socket timeout, here 5 s, 60 s by
    default) and renews over a new connection, so a live worker's job is not re-delivered
    while it runs. A second worker, connected directly, sweeps every 0.2 s meanwhile."""
    server = server_factory(appendonly=False)
    proxy = NetProxy(server.port)
    queue = "chaos-half-open-beat"
    work = ledger_work(queue)

    lease = 1.5
    options = {"CHAOS_LEASE": lease, "CHAOS_SWEEP": 0.2, "CHAOS_CONCURRENCY": 1}
    proxied = Workers(
        proxy.url_for(server.url, server.port) + "?socket_timeout=5", queue, tmp_path, count=1, **options
    )
    sweeper = None
    try:
        with Client.from_url(server.url) as direct:
            handle = direct.enqueue(work, 1, sleep=4 * lease)
            deadline = time.monotonic() + 15
            while direct.counts(queue)["active"] < 1:
                assert time.monotonic() < deadline, "the proxied worker claimed the job"
                time.sleep(0.05)
            # Busy with the job, so the sweeper claims nothing unless the lease runs out.
            sweeper = Workers(server.url, queue, tmp_path, count=1, **options)
            time.sleep(0.5)
            assert proxy.half_open() >= 2
            assert handle.result(timeout=60) == 1
            job = direct.get_job(queue, handle.id)
            events = direct.transport.call("XRANGE", direct.keys(queue).events, "-", "+")
        assert [e for e in events if "stalled" in e[1]] == [], "the lease ran out while the job ran"
        assert job.attempts == 1
    finally:
        proxied.stop(timeout=10)
        if sweeper is not None:
            sweeper.stop(timeout=5)
        proxy.close()

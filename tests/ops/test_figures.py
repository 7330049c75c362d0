"""The queue figures the scripts keep (include/metrics.lua) and figures.lua reads back."""

from __future__ import annotations

import time

import pytest
import redis

from conveyor import Client, Tasks, ops
from conveyor.metrics.buckets import BOUNDS_SECONDS, bucket_of, quantile

pytestmark = pytest.mark.cluster_too  # also on a cluster in the default suite (conftest.py)

KEEP = ops.Retention(-1, -1)


def enqueue(client: Client, queue: str, n: int, **options: object) -> None:
    tasks = Tasks(queue=queue)

    @tasks.task
    async def work(i: int) -> int:
        return i

    task = work.with_options(**options) if options else work  # type: ignore[arg-type]
    client.enqueue_many([task.call(i) for i in range(n)])


def claim(client: Client, queue: str, n: int) -> list[ops.Claimed]:
    return client.run(ops.claim(client.keys(queue), n, 60_000, "w1")).jobs


def test_a_new_queue_has_zero_figures(client: Client, queue: str) -> None:
    figures = client.figures(queue, minutes=5)
    assert figures.totals == ops.Period()
    assert figures.oldest_waiting_s == 0.0 and figures.delayed_due == 0
    assert len(figures.minutes) == 6 and all(period == ops.Period() for _, period in figures.minutes)
    assert figures.minutes[-1][0] == figures.now_ms // 60_000
    assert figures.rate_per_minute("completed") == 0.0


def test_every_outcome_is_counted_once(client: Client, queue: str) -> None:
    enqueue(client, queue, 10)
    keys = client.keys(queue)
    jobs = claim(client, queue, 10)
    assert len(jobs) == 10
    client.run(ops.complete(keys, KEEP, [(j.id, j.token, b"1") for j in jobs[:4]]))
    # a stale token is refused and counted as nothing
    client.run(ops.complete(keys, KEEP, [(jobs[4].id, "999999", b"1")]))
    client.run(
        ops.fail(
            keys,
            KEEP,
            [
                (jobs[4].id, jobs[4].token, b'{"type": "E"}', 0, ops.NOT_DEFERRED),  # retried now
                (jobs[5].id, jobs[5].token, b'{"type": "E"}', 60_000, ops.NOT_DEFERRED),  # retried later
                (jobs[6].id, jobs[6].token, b'{"type": "E"}', ops.RETRY_NEVER, ops.NOT_DEFERRED),
                (jobs[7].id, jobs[7].token, b'{"type": "E"}', ops.CANCELLED, ops.NOT_DEFERRED),
            ],
        )
    )
    # the same batch again (its reply lost): recorded already, not counted twice
    client.run(ops.complete(keys, KEEP, [(j.id, j.token, b"1") for j in jobs[:4]]))
    client.cancel(queue, claim(client, queue, 1)[0].id)  # running: only asks for an abort
    figures = client.figures(queue, minutes=1)
    totals = figures.totals
    assert (totals.completed, totals.retried, totals.failed, totals.cancelled) == (4, 2, 1, 1)
    assert totals.wait.count == 0 and totals.run.count == 0, "times come from the workers"
    assert figures.window(1) == totals, "all of it happened in the last minute or two"
    assert figures.counts["failed"] == 1 and figures.counts["cancelled"] == 1


def test_times_a_worker_measured_go_with_its_acknowledgement(
    client: Client, raw: redis.Redis, queue: str
) -> None:
    enqueue(client, queue, 3)
    time.sleep(0.3)  # they wait at least 0.3 s
    claim = client.run(ops.claim(client.keys(queue), 3, 60_000, "w1"))
    tally = ops.Tally()
    for job in claim.jobs:
        assert 0 < job.ready_ms <= claim.now_ms
        tally.waited(claim.now_ms - job.ready_ms)
        tally.ran(0.06)
    times = tally.take()
    assert tally.take() == [], "taken once"
    done = [(j.id, j.token, b"1") for j in claim.jobs[:2]]
    client.run(ops.complete(client.keys(queue), KEEP, done, times))
    totals = client.figures(queue).totals
    assert totals.completed == 2 and totals.wait.count == 3 and totals.run.count == 3
    assert sum(totals.wait.counts[: bucket_of(0.3)]) == 0 and 0.3 <= totals.wait.sum_seconds / 3 < 5
    assert totals.run.counts[bucket_of(0.06)] == 3 and totals.run.sum_seconds == pytest.approx(0.18)
    p50 = totals.wait.quantile(0.5)
    assert p50 is not None and 0.25 <= p50 <= 1.0
    # a failure carries them too; and the minute key expires with the day (default retention)
    tally.ran(2.0)
    last = (claim.jobs[2].id, claim.jobs[2].token, b'{"type": "E"}', ops.RETRY_NEVER, ops.NOT_DEFERRED)
    client.run(ops.fail(client.keys(queue), KEEP, [last], tally.take()))
    totals = client.figures(queue).totals
    assert totals.failed == 1 and totals.run.count == 4 and totals.run.counts[bucket_of(2.0)] == 1
    minute_key = client.keys(queue).metrics_prefix + f"{client.figures(queue, 0).minutes[-1][0]}"
    assert 86_000_000 < raw.pttl(minute_key) <= 86_400_000


def test_a_delayed_job_is_ready_from_when_it_was_due(client: Client, queue: str) -> None:
    enqueue(client, queue, 1, delay=0.2)
    time.sleep(0.25)
    figures = client.figures(queue)
    assert figures.delayed_due == 1, "due, not yet promoted: it waits"
    assert 0.0 < figures.oldest_waiting_s < 5
    claim = client.run(ops.claim(client.keys(queue), 1, 60_000, "w1"))
    [job] = claim.jobs
    created = client.get_job(queue, job.id).created_at
    assert created is not None and job.ready_ms - created.timestamp() * 1000 >= 150, "due, not enqueued"
    assert 0 <= claim.now_ms - job.ready_ms < 1000


def test_the_oldest_waiting_job(client: Client, queue: str) -> None:
    enqueue(client, queue, 2)
    time.sleep(0.2)
    enqueue(client, queue, 2, priority=5)
    figures = client.figures(queue)
    assert figures.counts["waiting"] == 4
    assert 0.2 <= figures.oldest_waiting_s < 5
    claim(client, queue, 4)
    assert client.figures(queue).oldest_waiting_s == 0.0


def test_lost_jobs_count_as_retried_then_failed(client: Client, raw: redis.Redis, queue: str) -> None:
    enqueue(client, queue, 1)
    keys = client.keys(queue)
    for crash in (1, 2):
        [job] = claim(client, queue, 1)
        raw.zadd(keys.active, {job.id: 0})  # its lease ran out: its worker died
        swept = client.run(ops.sweep(keys, 2, KEEP))
        assert (swept.recovered if crash == 1 else swept.dead) == [job.id]
    totals = client.figures(queue).totals
    assert (totals.retried, totals.failed, totals.run.count) == (1, 1, 0), "a lost run has no known end"


def test_settings_shorten_how_long_minutes_are_kept(client: Client, raw: redis.Redis, queue: str) -> None:
    raw.hset(client.keys(queue).settings, "metrics_keep_ms", 120_000)
    enqueue(client, queue, 1)
    [job] = claim(client, queue, 1)
    client.run(ops.complete(client.keys(queue), KEEP, [(job.id, job.token, b"1")]))
    minute = client.figures(queue, 0).minutes[-1][0]
    assert 0 < raw.pttl(client.keys(queue).metrics_prefix + f"{minute}") <= 120_000


def test_quantile_interpolates_within_a_bucket() -> None:
    counts = [0] * (len(BOUNDS_SECONDS) + 1)
    counts[bucket_of(0.007)] = 10  # all between 5 and 10 ms
    assert quantile(counts, 0.5) == pytest.approx(0.0075)
    assert quantile([0] * len(counts), 0.5) is None
    counts[-1] = 100  # past the last bound: reported as the last bound
    assert quantile(counts, 0.99) == BOUNDS_SECONDS[-1]


def test_a_bad_keep_setting_never_breaks_a_transition(client: Client, raw: redis.Redis, queue: str) -> None:
    """A script that failed half way would keep its first writes: the figures give way."""
    raw.hset(client.keys(queue).settings, "metrics_keep_ms", "1d")
    enqueue(client, queue, 2)
    jobs = claim(client, queue, 2)
    times = ops.Tally()
    times.ran(0.01)
    done = client.run(
        ops.complete(client.keys(queue), KEEP, [(j.id, j.token, b"1") for j in jobs], times.take())
    )
    assert done == [1, 1]
    assert client.counts(queue)["completed"] == 2 and client.counts(queue)["active"] == 0
    figures = client.figures(queue)
    assert figures.totals.completed == 2 and figures.totals.run.count == 1
    minute_key = client.keys(queue).metrics_prefix + f"{figures.minutes[-1][0]}"
    assert 86_000_000 < raw.pttl(minute_key) <= 86_400_000, "the default, not the bad value"
    # a slot no counter holds, from a worker that knows another layout, is left out
    more = client.run(ops.claim(client.keys(queue), 1, 60_000, "w1"))
    assert more.jobs == []
    enqueue(client, queue, 1)
    [job] = claim(client, queue, 1)
    assert client.run(
        ops.complete(client.keys(queue), KEEP, [(job.id, job.token, b"1")], [9_999_999, 5])
    ) == [1]


def test_a_handed_back_job_does_not_hide_older_ones(client: Client, queue: str) -> None:
    enqueue(client, queue, 3)
    time.sleep(0.3)
    [job] = claim(client, queue, 1)
    client.run(ops.requeue(client.keys(queue), [(job.id, job.token)]))  # back at the out end
    figures = client.figures(queue)
    assert figures.counts["waiting"] == 3 and figures.oldest_waiting_s >= 0.3


def test_a_deferral_is_not_counted_as_a_retry(client: Client, queue: str) -> None:
    enqueue(client, queue, 1)
    [job] = claim(client, queue, 1)
    deferred = (job.id, job.token, b'{"type": "RetryAfter"}', 0, 3)  # within max_deferrals 3
    assert client.run(ops.fail(client.keys(queue), KEEP, [deferred])) == [1]
    assert client.figures(queue).totals.retried == 0

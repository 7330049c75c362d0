"""complete.lua, fail.lua, extend.lua, sweep.lua, requeue.lua, retry.lua, remove.lua, purge.lua."""

from __future__ import annotations

import time

import pytest
import redis

from conveyor import Client, InvalidState, JobFailed, JobNotFound, JobState, ResultTimeout, Tasks, ops

pytestmark = pytest.mark.cluster_too  # also on a cluster in the default suite (conftest.py)

KEEP = ops.Retention(-1, -1)


def make(client: Client, queue: str, n: int = 1, **options: object) -> list[ops.Claimed]:
    tasks = Tasks(queue=queue)

    @tasks.task
    async def work(n: int) -> int:
        return n

    task = work.with_options(**options) if options else work  # type: ignore[arg-type]
    client.enqueue_many([task.call(i) for i in range(n)])
    jobs = client.run(ops.claim(client.keys(queue), n, 10_000, "w1")).jobs
    return jobs


def test_complete_stores_result_and_refuses_stale_token(client: Client, queue: str) -> None:
    [job] = make(client, queue)
    keys = client.keys(queue)
    assert client.run(ops.complete(keys, KEEP, [(job.id, str(int(job.token) + 1), b"1")])) == [False]
    assert client.run(ops.complete(keys, KEEP, [(job.id, job.token, b'{"ok": true}')])) == [True]
    again = client.run(ops.complete(keys, KEEP, [(job.id, job.token, b"2")]))
    assert again == [ops.ALREADY_RECORDED], "the same attempt again: recorded already, not twice"
    done = client.get_job(queue, job.id)
    assert done.state is JobState.COMPLETED and done.result == {"ok": True} and done.finished_at
    assert client.counts(queue)["completed"] == 1 and client.counts(queue)["active"] == 0
    assert client.wait_result(queue, job.id, timeout=0.1) == {"ok": True}


def test_completed_retention_by_count_and_ttl(client: Client, raw: redis.Redis, queue: str) -> None:
    jobs = make(client, queue, 5)
    keys = client.keys(queue)
    client.run(ops.complete(keys, ops.Retention(2, 60_000), [(j.id, j.token, b"0") for j in jobs]))
    assert client.counts(queue)["completed"] == 2
    kept, _ = client.list_jobs(queue, "completed")
    assert {j.id for j in kept} == {jobs[3].id, jobs[4].id}
    assert not raw.exists(keys.job(jobs[0].id)), "trimmed jobs are deleted, not orphaned"
    ttl = raw.pttl(keys.job(jobs[4].id))
    assert 50_000 < ttl <= 60_000


def test_keep_nothing_deletes_at_once(client: Client, raw: redis.Redis, queue: str) -> None:
    [job] = make(client, queue)
    client.run(ops.complete(client.keys(queue), ops.Retention(0, 0), [(job.id, job.token, b"0")]))
    assert client.counts(queue) == dict.fromkeys(
        ["waiting", "delayed", "active", "completed", "failed", "cancelled", "waiting_children"], 0
    )
    assert not raw.exists(client.keys(queue).job(job.id))


def test_fail_retries_then_dead_letters(client: Client, raw: redis.Redis, queue: str) -> None:
    [job] = make(client, queue)
    keys = client.keys(queue)
    assert client.run(ops.fail(keys, KEEP, [(job.id, job.token, b'{"type":"E"}', 0, ops.NOT_DEFERRED)])) == [
        1
    ]
    assert client.get_job(queue, job.id).state is JobState.WAITING
    [again] = client.run(ops.claim(keys, 1, 10_000, "w")).jobs
    assert again.attempts == 2 and int(again.token) > int(job.token)
    assert client.run(
        ops.fail(keys, KEEP, [(again.id, again.token, b'{"type":"E"}', 60_000, ops.NOT_DEFERRED)])
    ) == [1]
    delayed = client.get_job(queue, job.id)
    assert delayed.state is JobState.DELAYED and delayed.error == {"type": "E"}
    raw.zadd(keys.delayed, {job.id: 0})  # make it due now
    [third] = client.run(ops.claim(keys, 1, 10_000, "w")).jobs
    err = b'{"type":"ValueError","message":"bad"}'
    assert client.run(ops.fail(keys, KEEP, [(third.id, third.token, err, -1, ops.NOT_DEFERRED)])) == [2]
    dead = client.get_job(queue, job.id)
    assert dead.state is JobState.FAILED and dead.attempts == 3
    with pytest.raises(JobFailed, match="ValueError: bad"):
        client.wait_result(queue, job.id, timeout=0.1)


def test_extend_renews_and_reports_lost_leases(client: Client, raw: redis.Redis, queue: str) -> None:
    a, b = make(client, queue, 2)
    keys = client.keys(queue)
    before = raw.zscore(keys.active, a.id)
    time.sleep(0.01)
    lost, abort = client.run(ops.extend(keys, 60_000, [(a.id, a.token), (b.id, "999999")]))
    assert lost == ["999999"] and abort == [], "answers name attempts (tokens), not jobs"
    assert raw.zscore(keys.active, a.id) > before + 40_000


def test_sweep_redelivers_expired_leases_first_in_line(client: Client, raw: redis.Redis, queue: str) -> None:
    jobs = make(client, queue, 2)
    keys = client.keys(queue)
    tasks = Tasks(queue=queue)

    @tasks.task
    async def other() -> None: ...

    newer = client.enqueue(other)
    raw.zadd(keys.active, {jobs[0].id: 0})  # lease expired: its worker died
    recovered, dead, *_ = client.run(ops.sweep(keys, 3, KEEP))
    assert recovered == [jobs[0].id] and dead == []
    state = client.get_job(queue, jobs[0].id)
    assert state.state is JobState.WAITING and state.crashes == 1
    [first] = client.run(ops.claim(keys, 1, 10_000, "w2")).jobs
    assert first.id == jobs[0].id and first.id != newer.id
    assert client.run(ops.complete(keys, KEEP, [(jobs[0].id, jobs[0].token, b"0")])) == [False], (
        "the dead worker's token is stale"
    )


def test_sweep_dead_letters_a_job_that_keeps_killing_workers(
    client: Client, raw: redis.Redis, queue: str
) -> None:
    [job] = make(client, queue)
    keys = client.keys(queue)
    for crash in range(1, 4):
        raw.zadd(keys.active, {job.id: 0})
        recovered, dead, *_ = client.run(ops.sweep(keys, 3, KEEP))
        if crash < 3:
            assert recovered == [job.id]
            client.run(ops.claim(keys, 1, 10_000, "w"))
        else:
            assert dead == [job.id]
    failed = client.get_job(queue, job.id)
    assert failed.state is JobState.FAILED
    assert failed.error and failed.error["message"] == "worker lost 3 times while running this job"


def test_requeue_hands_back_without_counting_the_attempt(client: Client, queue: str) -> None:
    [job] = make(client, queue)
    keys = client.keys(queue)
    assert client.run(ops.requeue(keys, [(job.id, job.token)])) == 1
    back = client.get_job(queue, job.id)
    assert back.state is JobState.WAITING and back.attempts == 0 and back.crashes == 0


def test_retry_dead_jobs_one_or_all(client: Client, queue: str) -> None:
    jobs = make(client, queue, 3)
    keys = client.keys(queue)
    client.run(ops.fail(keys, KEEP, [(j.id, j.token, b"{}", -1, ops.NOT_DEFERRED) for j in jobs]))
    assert client.retry(queue, [jobs[0].id, "nonexistent"]) == 1
    assert client.get_job(queue, jobs[0].id).state is JobState.WAITING
    assert client.retry(queue) == 2
    assert client.counts(queue)["waiting"] == 3 and client.counts(queue)["failed"] == 0
    assert client.get_job(queue, jobs[1].id).attempts == 0


def test_remove_and_purge(client: Client, queue: str) -> None:
    [active] = make(client, queue)
    with pytest.raises(InvalidState, match="is running"):
        client.remove(queue, active.id)
    with pytest.raises(JobNotFound):
        client.remove(queue, "missing")
    tasks = Tasks(queue=queue)

    @tasks.task
    async def w() -> None: ...

    client.enqueue_many([w.call() for _ in range(2500)])
    client.enqueue_many([w.with_options(delay=100).call() for _ in range(10)])
    assert client.purge(queue) == 2510
    counts = client.counts(queue)
    assert counts["waiting"] == 0 and counts["delayed"] == 0 and counts["active"] == 1


def test_result_timeout_and_missing_job(client: Client, queue: str) -> None:
    tasks = Tasks(queue=queue)

    @tasks.task
    async def w() -> None: ...

    handle = client.enqueue(w)
    started = time.perf_counter()
    with pytest.raises(ResultTimeout):
        handle.result(timeout=0.2)
    assert 0.15 < time.perf_counter() - started < 2
    with pytest.raises(JobNotFound):
        client.wait_result(queue, "nope", timeout=0.1)


def test_an_acknowledgement_sent_again_is_answered_recorded_already(client: Client, queue: str) -> None:
    """A batch retried after its connection broke may have been recorded by the first try:
    the same attempt's outcome is answered "recorded already", a stale attempt's refused."""
    retried, swept = make(client, queue, 2)
    keys = client.keys(queue)
    failure = (retried.id, retried.token, b'{"type":"E"}', 60_000, ops.NOT_DEFERRED)
    assert client.run(ops.fail(keys, KEEP, [failure])) == [1]
    assert client.run(ops.fail(keys, KEEP, [failure])) == [ops.ALREADY_RECORDED]
    assert client.get_job(queue, retried.id).state is JobState.DELAYED, "recorded once"
    # A lease that ran out and was swept: its worker's late failure is refused, not "recorded".
    client.transport.call("ZADD", keys.active, "XX", 1, swept.id)
    assert client.run(ops.sweep(keys, 3, KEEP)).recovered == [swept.id]
    late = (swept.id, swept.token, b'{"type":"E"}', 0, ops.NOT_DEFERRED)
    assert client.run(ops.fail(keys, KEEP, [late])) == [0]
    assert client.run(ops.complete(keys, KEEP, [(swept.id, swept.token, b"1")])) == [0]


def test_a_deferral_gives_the_attempt_back_up_to_the_cap(client: Client, queue: str) -> None:
    keys = client.keys(queue)
    [job] = make(client, queue)
    asked = b'{"type":"RetryAfter","message":"429"}'
    for round_ in range(3):
        assert client.run(ops.fail(keys, KEEP, [(job.id, job.token, asked, 0, 2)])) == [
            1 if round_ < 2 else 2
        ]
        stored = client.get_job(queue, job.id)
        if round_ < 2:
            assert stored.attempts == 0 and stored.deferrals == round_ + 1
            [job] = client.run(ops.claim(keys, 1, 10_000, "w1")).jobs
    assert stored.state is JobState.FAILED and stored.attempts == 1 and stored.deferrals == 3
    assert stored.error is not None and stored.error["reason"] == "max_deferrals"
    assert stored.error["message"] == "deferred 2 times (max_deferrals 2); it asked again: 429"


def test_leases_that_ran_out_while_no_worker_reached_redis_are_left_to_their_workers(
    client: Client, queue: str
) -> None:
    """After a silence (Redis down, or out of every worker's reach) longer than half a lease,
    leases that ran out in it are not re-delivered for a lease's time: live workers renew them.
    A lease that ran out before the silence is re-delivered as usual."""
    keys = client.keys(queue)
    before, during = make(client, queue, 2)
    lease_ms = 4_000
    now = int(client.transport.call("TIME")[0]) * 1000
    assert client.run(ops.sweep(keys, 3, KEEP, lease_ms=lease_ms)).silence_ms == 0  # the clock starts
    # Seen last 10 s ago; one lease ran out before that, the other during the silence.
    client.transport.call("HSET", keys.lease_clock, "seen", now - 10_000)
    client.transport.call("ZADD", keys.active, "XX", now - 12_000, before.id, now - 5_000, during.id)
    swept = client.run(ops.sweep(keys, 3, KEEP, lease_ms=lease_ms))
    assert swept.recovered == [before.id] and swept.dead == []
    assert 9_000 <= swept.silence_ms <= 12_000 and swept.held_back == 1
    assert client.get_job(queue, during.id).crashes == 0
    # Its worker's heartbeat renews it: it was never lost.
    lost, _ = client.run(ops.extend(keys, lease_ms, [(during.id, during.token)]))
    assert lost == [] and client.get_job(queue, during.id).state is JobState.ACTIVE
    # A worker that really died: once the grace is over, its lease counts as lost.
    client.transport.call("ZADD", keys.active, "XX", now - 5_000, during.id)
    assert client.run(ops.sweep(keys, 3, KEEP, lease_ms=lease_ms)).recovered == []
    client.transport.call("HSET", keys.lease_clock, "to", now - lease_ms - 1)
    swept = client.run(ops.sweep(keys, 3, KEEP, lease_ms=lease_ms))
    assert swept.recovered == [during.id] and swept.silence_ms == 0
    assert client.get_job(queue, during.id).crashes == 1

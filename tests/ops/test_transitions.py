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
    assert client.run(ops.complete(keys, KEEP, [(job.id, job.token, b"2")])) == [False], "only once"
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
    assert client.run(ops.fail(keys, KEEP, [(job.id, job.token, b'{"type":"E"}', 0, 0)])) == [1]
    assert client.get_job(queue, job.id).state is JobState.WAITING
    [again] = client.run(ops.claim(keys, 1, 10_000, "w")).jobs
    assert again.attempts == 2 and int(again.token) > int(job.token)
    assert client.run(ops.fail(keys, KEEP, [(again.id, again.token, b'{"type":"E"}', 60_000, 0)])) == [1]
    delayed = client.get_job(queue, job.id)
    assert delayed.state is JobState.DELAYED and delayed.error == {"type": "E"}
    raw.zadd(keys.delayed, {job.id: 0})  # make it due now
    [third] = client.run(ops.claim(keys, 1, 10_000, "w")).jobs
    err = b'{"type":"ValueError","message":"bad"}'
    assert client.run(ops.fail(keys, KEEP, [(third.id, third.token, err, -1, 0)])) == [2]
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
    assert lost == [b.id] and abort == []
    assert raw.zscore(keys.active, a.id) > before + 40_000


def test_sweep_redelivers_expired_leases_first_in_line(client: Client, raw: redis.Redis, queue: str) -> None:
    jobs = make(client, queue, 2)
    keys = client.keys(queue)
    tasks = Tasks(queue=queue)

    @tasks.task
    async def other() -> None: ...

    newer = client.enqueue(other)
    raw.zadd(keys.active, {jobs[0].id: 0})  # lease expired: its worker died
    recovered, dead = client.run(ops.sweep(keys, 3, KEEP))
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
        recovered, dead = client.run(ops.sweep(keys, 3, KEEP))
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
    client.run(ops.fail(keys, KEEP, [(j.id, j.token, b"{}", -1, 0) for j in jobs]))
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

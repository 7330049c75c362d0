"""claim.lua: batches, leases, fencing tokens, priority order, delayed promotion, wake-ups."""

from __future__ import annotations

import time

import pytest
import redis

from conveyor import Client, JobState, Tasks, ops

pytestmark = pytest.mark.cluster_too  # also on a cluster in the default suite (conftest.py)


def setup(queue: str) -> tuple[Tasks, object]:
    tasks = Tasks(queue=queue)

    @tasks.task
    async def work(n: int) -> int:
        return n

    return tasks, work


def test_claims_up_to_n_in_fifo_order_with_increasing_tokens(
    client: Client, raw: redis.Redis, queue: str
) -> None:
    _, work = setup(queue)
    handles = client.enqueue_many([work.call(i) for i in range(10)])  # type: ignore[attr-defined]
    claim = client.run(ops.claim(client.keys(queue), 4, 10_000, "w1"))
    jobs, wait_ms = claim.jobs, claim.wait_ms
    assert [j.id for j in jobs] == [h.id for h in handles[:4]]
    assert wait_ms == -1
    tokens = [int(j.token) for j in jobs]
    assert tokens == sorted(tokens) and len(set(tokens)) == 4
    assert all(j.attempts == 1 and j.task == "work" for j in jobs)
    assert client.counts(queue)["active"] == 4 and client.counts(queue)["waiting"] == 6
    job = client.get_job(queue, jobs[0].id)
    assert job.state is JobState.ACTIVE and job.worker == "w1" and job.token == tokens[0]
    lease = raw.zscore(client.keys(queue).active, jobs[0].id)
    assert lease is not None and lease > time.time() * 1000 + 9_000


def test_priorities_higher_first_fifo_within(client: Client, queue: str) -> None:
    _, work = setup(queue)
    calls = []
    for i, priority in enumerate([0, 5, -3, 5, 0, 10, -3, 0]):
        calls.append(work.with_options(priority=priority, job_id=f"j{i}").call(i))  # type: ignore[attr-defined]
    client.enqueue_many(calls)
    listed, total = client.list_jobs(queue, "waiting", 0, 20)
    expected = ["j5", "j1", "j3", "j0", "j4", "j7", "j2", "j6"]
    assert total == 8 and [j.id for j in listed] == expected, "listing shows the dequeue order"
    claimed = []
    for _ in range(8):
        jobs = client.run(ops.claim(client.keys(queue), 1, 10_000, "w")).jobs
        claimed += [j.id for j in jobs]
    assert claimed == expected


@pytest.mark.serial  # alone in make test (conftest.py): a 50 ms delay between two calls
def test_due_delayed_jobs_are_promoted_and_wait_time_reported(client: Client, queue: str) -> None:
    _, work = setup(queue)
    client.enqueue(work.with_options(delay=0.05, job_id="soon"), 1)  # type: ignore[attr-defined]
    client.enqueue(work.with_options(delay=30, job_id="later"), 2)  # type: ignore[attr-defined]
    claim = client.run(ops.claim(client.keys(queue), 10, 10_000, "w"))
    jobs, wait_ms = claim.jobs, claim.wait_ms
    assert jobs == [] and 0 <= wait_ms <= 50
    time.sleep(0.06)
    claim = client.run(ops.claim(client.keys(queue), 10, 10_000, "w"))
    jobs, wait_ms = claim.jobs, claim.wait_ms
    assert [j.id for j in jobs] == ["soon"]
    assert 29_000 < wait_ms <= 30_000


def test_claim_wakes_next_worker_when_work_remains(client: Client, raw: redis.Redis, queue: str) -> None:
    _, work = setup(queue)
    keys = client.keys(queue)
    client.enqueue_many([work.call(i) for i in range(5)])  # type: ignore[attr-defined]
    assert raw.zcard(keys.marker) == 1
    raw.delete(keys.marker)
    client.run(ops.claim(keys, 2, 10_000, "w"))
    assert raw.zcard(keys.marker) == 1, "work remains: the next blocked worker is woken"
    raw.delete(keys.marker)
    client.run(ops.claim(keys, 10, 10_000, "w"))
    assert raw.zcard(keys.marker) == 0, "nothing left: nobody is woken"


def test_removed_waiting_job_is_skipped(client: Client, queue: str) -> None:
    _, work = setup(queue)
    a, b = client.enqueue_many([work.call(1), work.call(2)])  # type: ignore[attr-defined]
    assert client.remove(queue, a.id) is JobState.WAITING
    jobs = client.run(ops.claim(client.keys(queue), 10, 10_000, "w")).jobs
    assert [j.id for j in jobs] == [b.id]


def test_priority_aging_lets_old_low_priority_jobs_through(client: Client, queue: str) -> None:
    _, work = setup(queue)
    keys = client.keys(queue)

    def claim_one() -> str:
        (job,) = client.run(ops.claim(keys, 1, 10_000, "w1")).jobs
        return job.id

    old_low = client.enqueue(work.with_options(priority=-3), 1)  # type: ignore[attr-defined]
    old_plain = client.enqueue(work, 2)  # type: ignore[attr-defined]
    time.sleep(0.45)
    fresh = client.enqueue_many([work.with_options(priority=1).call(3) for _ in range(2)])  # type: ignore[attr-defined]
    # Without aging the fresh priority-1 jobs would go first (see the next test).
    client.set_limits(queue, priority_aging=0.1)
    assert client.settings_of(queue)["aging_ms"] == 100
    # 450 ms at one level per 100 ms: the plain job is now at 4, the low one at -3 + 4 = 1,
    # ahead of the fresh jobs at 1 because it has waited longer.
    assert claim_one() == old_plain.id
    assert claim_one() == old_low.id
    assert [claim_one(), claim_one()] == [h.id for h in fresh]
    assert client.get_job(queue, old_low.id).priority == -3, "the job keeps its own priority"


def test_without_aging_priorities_are_strict(client: Client, queue: str) -> None:
    _, work = setup(queue)
    low = client.enqueue(work.with_options(priority=-3), 1)  # type: ignore[attr-defined]
    time.sleep(0.25)
    high = client.enqueue(work.with_options(priority=1), 2)  # type: ignore[attr-defined]
    jobs = client.run(ops.claim(client.keys(queue), 2, 10_000, "w1")).jobs
    assert [job.id for job in jobs] == [high.id, low.id]

"""enqueue.lua through both client faces: creation, bulk, ids, priorities, delays, bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from conveyor import AsyncClient, Client, EnqueueOutcome, JobState, PayloadTooLarge, SerializationError, Tasks

pytestmark = pytest.mark.cluster_too  # also on a cluster in the default suite (conftest.py)


def make_tasks(queue: str) -> tuple[Tasks, object, object]:
    tasks = Tasks(queue=queue)

    @tasks.task
    async def add(x: int, y: int) -> int:
        return x + y

    @tasks.task(retries=1)
    def shout(text: str, *, times: int = 1) -> str:
        return text.upper() * times

    return tasks, add, shout


def test_enqueue_creates_a_waiting_job(client: Client, queue: str) -> None:
    _, add, _ = make_tasks(queue)
    handle = client.enqueue(add, 1, 2)  # type: ignore[arg-type]
    assert handle.created and handle.outcome is EnqueueOutcome.CREATED
    job = handle.fetch()
    assert (job.state, job.task, job.args, job.kwargs, job.attempts) == (
        JobState.WAITING,
        "add",
        [1, 2],
        {},
        0,
    )
    assert job.created_at is not None
    assert client.counts(queue) == {
        "waiting": 1,
        "delayed": 0,
        "active": 0,
        "completed": 0,
        "failed": 0,
        "cancelled": 0,
        "waiting_children": 0,
    }


def test_kwargs_and_options_are_stored(client: Client, queue: str) -> None:
    _, _, shout = make_tasks(queue)
    handle = client.enqueue(shout.with_options(retries=7, timeout=3), "hi", times=2)  # type: ignore[attr-defined]
    job = handle.fetch()
    assert job.args == ["hi"] and job.kwargs == {"times": 2}
    assert job.options == {"retries": 7, "timeout": 3.0}


def test_existing_id_is_reported_not_duplicated(client: Client, queue: str) -> None:
    _, add, _ = make_tasks(queue)
    first = client.enqueue(add.with_options(job_id="order-42"), 1, 2)  # type: ignore[attr-defined]
    again = client.enqueue(add.with_options(job_id="order-42"), 5, 5)  # type: ignore[attr-defined]
    assert first.created and not again.created
    assert again.outcome is EnqueueOutcome.EXISTED and again.id == "order-42"
    assert client.get_job(queue, "order-42").args == [1, 2]  # the first job stands
    assert client.counts(queue)["waiting"] == 1


def test_bulk_enqueue_in_one_call(client: Client, queue: str) -> None:
    _, add, _ = make_tasks(queue)
    handles = client.enqueue_many([add.call(i, i) for i in range(25_000)])  # type: ignore[attr-defined]
    assert len(handles) == 25_000 and all(h.created for h in handles)
    assert len({h.id for h in handles}) == 25_000
    assert client.counts(queue)["waiting"] == 25_000
    ids = [h.id for h in handles]
    assert ids == sorted(ids), "generated ids sort by creation time"


@pytest.mark.parametrize("face", ["sync", "async"])
async def test_a_bulk_holds_off_the_garbage_collector_and_leaves_it_as_found(
    client: Client, aclient: AsyncClient, queue: str, face: str
) -> None:
    """The thousands of short-lived objects of a bulk would trigger collections, a full one
    now and then; during enqueue_many none runs (at most one small one when it resumes), and
    the collector is back on afterwards -- or still off, if the application turned it off."""
    import gc

    _, add, _ = make_tasks(queue)
    collections: list[int] = []

    def record(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    async def bulk(n: int, *, encode_only: bool = False) -> list[int]:
        calls = [add.call(i, 0) for i in range(n)]  # type: ignore[attr-defined]
        gc.collect()
        collections.clear()
        gc.callbacks.append(record)
        try:
            if encode_only:  # what enqueue_many does with each call, unpaused
                assert len([client._encode(call, "") for call in calls]) == n
            elif face == "sync":
                assert len(client.enqueue_many(calls)) == n
            else:
                assert len(await aclient.enqueue_many(calls)) == n
        finally:
            gc.callbacks.remove(record)
        return list(collections)

    await bulk(10)  # scripts loaded, queue registered
    try:
        assert len(await bulk(5_000, encode_only=True)) >= 3, "the check below could not fail"
        assert len(await bulk(5_000)) <= 1 and gc.isenabled()
        gc.disable()
        assert await bulk(100) == [] and not gc.isenabled()
    finally:
        gc.enable()


@pytest.mark.parametrize("face", ["sync", "async"])
async def test_pipelined_chunks_keep_order_across_queues_and_a_script_flush(
    client: Client, aclient: AsyncClient, raw: redis.Redis, queue: str, face: str
) -> None:
    """A bulk is written as several scripts sent back to back (one pipeline); a SCRIPT FLUSH
    just before makes every one of them answer NOSCRIPT, and each is run again, in order."""
    _, add, _ = make_tasks(queue)
    other = queue + "-b"
    calls = [add.call(i, 0) if i % 3 else add.with_options(queue=other).call(i, 0) for i in range(7_000)]  # type: ignore[attr-defined]
    raw.script_flush()
    if face == "sync":
        handles = client.enqueue_many(calls)
    else:
        handles = await aclient.enqueue_many(calls)
    assert all(h.created for h in handles) and len({h.id for h in handles}) == 7_000
    assert [h.queue for h in handles] == [other if i % 3 == 0 else queue for i in range(7_000)]
    for name in (queue, other):
        expected = [h.id for h in handles if h.queue == name]
        waiting, total = client.list_jobs(name, JobState.WAITING, limit=10_000)
        assert total == len(expected) and [job.id for job in waiting] == expected, "FIFO across chunks"


@pytest.mark.parametrize("face", ["sync", "async"])
async def test_an_error_in_a_pipelined_bulk_leaves_the_connection_clean(
    client: Client, aclient: AsyncClient, raw: redis.Redis, queue: str, face: str
) -> None:
    """Every chunk of a bulk fails (the waiting list was made a string): the first error is
    raised only after every reply was read, so the next call on that connection gets its
    own reply, not a stale one."""
    _, add, _ = make_tasks(queue)
    calls = [add.call(i, 0) for i in range(1_000)]  # type: ignore[attr-defined]
    if face == "sync":
        client.enqueue_many(calls[:2])
    else:
        await aclient.enqueue_many(calls[:2])
    waiting = client.keys(queue).waiting
    raw.delete(waiting)
    raw.set(waiting, "not a list")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        if face == "sync":
            client.enqueue_many(calls)
        else:
            await aclient.enqueue_many(calls)
    raw.delete(waiting)
    for _ in range(3):  # the pool holds one connection: each call would meet a stale reply
        if face == "sync":
            handle = client.enqueue(add, 7, 8)  # type: ignore[arg-type]
            job = handle.fetch()
            assert client.counts(queue)["waiting"] >= 1
        else:
            ahandle = await aclient.enqueue(add, 7, 8)  # type: ignore[arg-type]
            job = await ahandle.fetch()
        assert (job.task, job.args, job.state) == ("add", [7, 8], JobState.WAITING)


def test_bulk_reports_existing_ids_individually(client: Client, queue: str) -> None:
    _, add, _ = make_tasks(queue)
    client.enqueue(add.with_options(job_id="b"), 0, 0)  # type: ignore[attr-defined]
    calls = [add.with_options(job_id=i).call(1, 1) for i in ("a", "b", "c")]  # type: ignore[attr-defined]
    outcomes = [h.outcome for h in client.enqueue_many(calls)]
    assert outcomes == [EnqueueOutcome.CREATED, EnqueueOutcome.EXISTED, EnqueueOutcome.CREATED]


def test_unserialisable_arguments_write_nothing(client: Client, queue: str) -> None:
    _, add, _ = make_tasks(queue)
    with pytest.raises(SerializationError, match="cannot be encoded as JSON"):
        client.enqueue_many([add.call(1, 2), add.call(object(), 2)])  # type: ignore[attr-defined]
    assert client.counts(queue)["waiting"] == 0


def test_payload_cap(url: str, queue: str) -> None:
    _, _, shout = make_tasks(queue)
    with Client.from_url(url, max_payload_bytes=1000) as small:
        with pytest.raises(PayloadTooLarge, match="over the limit of 1,000 bytes"):
            small.enqueue(shout, "x" * 2000)  # type: ignore[arg-type]
        assert small.counts(queue)["waiting"] == 0


def test_delay_and_run_at_make_delayed_jobs(client: Client, queue: str) -> None:
    _, add, _ = make_tasks(queue)
    later = client.enqueue(add.with_options(delay=60), 1, 1)  # type: ignore[attr-defined]
    at = datetime.now(UTC) + timedelta(hours=1)
    scheduled = client.enqueue(add.with_options(run_at=at), 1, 1)  # type: ignore[attr-defined]
    assert later.fetch().state is JobState.DELAYED
    job = scheduled.fetch()
    assert job.state is JobState.DELAYED and job.run_at is not None
    assert abs((job.run_at - at).total_seconds()) < 0.01
    assert client.counts(queue)["delayed"] == 2


def test_invalid_options_are_rejected_when_given() -> None:
    tasks = Tasks()

    @tasks.task
    def noop() -> None: ...

    with pytest.raises(ValueError, match="priority"):
        noop.with_options(priority=1 << 30)
    with pytest.raises(ValueError, match="delay"):
        noop.with_options(delay=-1)
    with pytest.raises(ValueError, match="timezone-aware"):
        noop.with_options(run_at=datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="braces"):
        noop.with_options(queue="a{b}")
    with pytest.raises(ValueError, match="either delay or run_at"):
        noop.with_options(delay=1, run_at=datetime.now(UTC))


async def test_async_face_shares_the_same_operations(aclient: AsyncClient, queue: str) -> None:
    _, add, _ = make_tasks(queue)
    handle = await aclient.enqueue(add.with_options(job_id="same"), 2, 3)  # type: ignore[attr-defined]
    again = await aclient.enqueue(add.with_options(job_id="same"), 2, 3)  # type: ignore[attr-defined]
    assert handle.created and not again.created
    many = await aclient.enqueue_many([add.call(i, 1) for i in range(100)])  # type: ignore[attr-defined]
    assert len(many) == 100
    assert (await aclient.counts(queue))["waiting"] == 101
    job = await handle.fetch()
    assert job.args == [2, 3]


@pytest.mark.parametrize("bad", ["a{b}", "tab\there", "nul\x00", "line\nbreak", "x" * 300])
def test_bad_names_are_refused_before_anything_is_written(bad: str) -> None:
    tasks = Tasks()

    @tasks.task
    def noop() -> None: ...

    with pytest.raises(ValueError, match="queue name"):
        noop.with_options(queue=bad)
    with pytest.raises(ValueError, match="job id"):
        noop.with_options(job_id=bad)


def test_a_generated_id_that_clashes_is_replaced_not_dropped(
    client: Client, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two producers can generate the same id (same ms, counter and random bits): the job
    whose id the caller did not choose is written under a fresh id instead of "existed"."""
    from conveyor import producer as client_module
    from conveyor.ops.ids import new_job_ids

    _, add, _ = make_tasks(queue)
    first = client.enqueue(add, 1, 1)  # type: ignore[arg-type]
    # the bulk: both clash, then one of them again; the single enqueue clashes once
    handed_out = iter([[first.id, first.id], [first.id, new_job_ids(1)[0]], None, [first.id]])
    monkeypatch.setattr(client_module, "new_job_ids", lambda n: next(handed_out, None) or new_job_ids(n))
    handles = client.enqueue_many([add.call(2, 2), add.call(3, 3)])  # type: ignore[attr-defined]
    assert all(h.created for h in handles) and first.id not in {h.id for h in handles}
    assert sorted(client.get_job(queue, h.id).args[0] for h in handles) == [2, 3]
    single = client.enqueue(add, 4, 4)  # type: ignore[arg-type]
    assert single.created and single.id != first.id
    assert client.counts(queue)["waiting"] == 4


@pytest.mark.parametrize("many", [False, True])
def test_an_enqueue_sent_twice_after_a_lost_reply_makes_its_jobs_once(
    server_factory: Any, many: bool
) -> None:
    """redis-py re-sends a command whose reply timed out (its default retry). A frozen
    server then runs the enqueue twice; the second run finds its generated ids taken by
    identical jobs -- its own -- and must report them created, not make them again under
    new ids (which the clash handling for other producers' ids would otherwise do)."""
    import os
    import signal
    import threading
    import time

    from redis.backoff import NoBackoff
    from redis.retry import Retry

    server = server_factory(appendonly=False)
    tasks = Tasks(queue="resent")

    @tasks.task
    def noop(i: int) -> None: ...

    connection = redis.Redis(
        port=server.port,
        password=server.password,
        decode_responses=True,
        socket_timeout=0.3,
        retry=Retry(NoBackoff(), 5),
    )
    with Client(connection) as client:
        client.enqueue(noop, 0)  # scripts loaded
        os.kill(server.process.pid, signal.SIGSTOP)  # a reply lost to a timeout, then back
        threading.Timer(0.5, os.kill, (server.process.pid, signal.SIGCONT)).start()
        if many:
            handles = client.enqueue_many([noop.call(i) for i in range(1, 4)])
        else:
            handles = [client.enqueue(noop, 1)]
        time.sleep(0.3)
        assert all(h.created for h in handles)
        waiting = client.counts("resent")["waiting"]
        assert waiting == 1 + len(handles), f"{waiting - 1} jobs for {len(handles)} enqueued"
        assert all(client.get_job("resent", h.id).args == [i + 1] for i, h in enumerate(handles))

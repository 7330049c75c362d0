"""Flows, chains and chords: a parent runs after its children (child.lua, the outbox, flows.py)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import redis

from conveyor import (
    AsyncClient,
    Client,
    Flow,
    FlowHandle,
    JobFailed,
    JobState,
    Tasks,
    chain,
    chord,
    current_job,
    ops,
)
from conveyor.ops import flows as flow_ops

from helpers import running_worker, wait_until

pytestmark = pytest.mark.cluster_too  # also on a cluster in the default suite (conftest.py)


def _other_queue() -> str:
    return f"t-flows-other-{uuid.uuid4().hex[:8]}"


async def test_parent_runs_after_its_children_and_reads_their_results(
    aclient: AsyncClient, tasks: Tasks, url: str, queue: str
) -> None:
    seen: list[tuple[str, str, object]] = []

    @tasks.task
    async def fetch(n: int) -> int:
        return n * n

    @tasks.task
    async def report() -> int:
        children = current_job().children
        seen.extend((child.id, child.state, child.result) for child in children)
        return sum(child.result for child in children)

    handle = await aclient.enqueue_flow(Flow(report.call(), [fetch.call(n) for n in range(1, 5)]))
    parent = await handle.job.fetch()
    assert parent.state is JobState.WAITING_CHILDREN and parent.children_pending == 4
    assert (await aclient.counts(queue))["waiting_children"] == 1
    assert (await aclient.counts(queue))["waiting"] == 4
    child_job = await handle.children[0].fetch()  # type: ignore[union-attr]
    assert child_job.parent == (queue, handle.job.id)

    async with running_worker(tasks, url):
        assert await handle.job.result(timeout=10) == 1 + 4 + 9 + 16
    assert [state for _, state, _ in seen] == ["completed"] * 4
    assert [result for _, _, result in seen] == [1, 4, 9, 16], "children in the order given"
    assert [child_id for child_id, _, _ in seen] == [child.id for child in handle.children]  # type: ignore[union-attr]
    assert (await aclient.counts(queue))["waiting_children"] == 0


async def test_chain_passes_each_result_on(aclient: AsyncClient, tasks: Tasks, url: str, queue: str) -> None:
    @tasks.task
    async def add(a: int, b: int) -> int:
        return a + b

    @tasks.task
    def times(value: int, factor: int) -> int:  # sync: runs in a thread
        return value * factor

    @tasks.task
    async def describe(value: int) -> str:
        return f"got {value}"

    handle = await aclient.enqueue_flow(chain(add.call(1, 2), times.call(10), describe.call()))
    async with running_worker(tasks, url):
        assert await handle.job.result(timeout=10) == "got 30"


async def test_chord_calls_back_with_all_results_in_order(
    aclient: AsyncClient, tasks: Tasks, url: str, queue: str
) -> None:
    other = _other_queue()

    @tasks.task
    async def square(n: int) -> int:
        return n * n

    @tasks.task
    async def total(results: list[int], label: str) -> str:
        return f"{label}={sum(results)} {results}"

    # the group runs on another queue than the callback: the flow spans two queues
    group = [square.with_options(queue=other).call(n) for n in range(5)]
    handle = await aclient.enqueue_flow(chord(group, total.call("sum")))
    assert {child.queue for child in handle.children} == {other}  # type: ignore[union-attr]
    async with running_worker(tasks, url, queues=[queue, other]):
        assert await handle.job.result(timeout=10) == "sum=30 [0, 1, 4, 9, 16]"


async def test_a_chord_of_one_still_passes_a_list(aclient: AsyncClient, tasks: Tasks, url: str) -> None:
    @tasks.task
    async def square(n: int) -> int:
        return n * n

    @tasks.task
    async def describe(results: list[int]) -> str:
        return repr(results)

    one = await aclient.enqueue_flow(chord([square.call(3)], describe.call()))
    step = await aclient.enqueue_flow(Flow(describe.call(), [square.call(4)], pass_results=True))
    async with running_worker(tasks, url):
        assert await one.job.result(timeout=10) == "[9]", "a chord hands its callback a list"
        assert await step.job.result(timeout=10) == "16", "pass_results=True: the one result"


async def test_a_failed_child_fails_the_parent_or_is_ignored(
    aclient: AsyncClient, tasks: Tasks, url: str, queue: str
) -> None:
    @tasks.task(retries=0)
    async def flaky(ok: bool) -> str:
        if not ok:
            raise ValueError("bad input")
        return "fine"

    @tasks.task
    async def summary() -> list[str]:
        return [f"{c.state}:{c.error['message'] if c.error else c.result}" for c in current_job().children]

    strict = await aclient.enqueue_flow(Flow(summary.call(), [flaky.call(True), flaky.call(False)]))
    lenient = await aclient.enqueue_flow(
        Flow(summary.call(), [flaky.call(True), flaky.call(False)], on_child_failure="ignore")
    )
    async with running_worker(tasks, url):
        with pytest.raises(JobFailed) as failed:
            await strict.job.result(timeout=10)
        assert await lenient.job.result(timeout=10) == ["completed:fine", "failed:bad input"]
    error = (await strict.job.fetch()).error
    assert error is not None and error["reason"] == "child_failed"
    assert "bad input" in error["message"] and strict.children[1].id in error["message"]  # type: ignore[union-attr]
    assert "child" in str(failed.value)


async def test_a_failure_travels_up_a_chain(aclient: AsyncClient, tasks: Tasks, url: str, queue: str) -> None:
    other = _other_queue()

    @tasks.task(retries=0)
    async def boom() -> int:
        raise RuntimeError("first step broke")

    @tasks.task
    async def step(value: int) -> int:
        return value + 1

    handle = await aclient.enqueue_flow(
        chain(boom.call(), step.with_options(queue=other).call(), step.call())
    )
    async with running_worker(tasks, url, queues=[queue, other]):
        with pytest.raises(JobFailed):
            await handle.job.result(timeout=10)
    middle = handle.children[0]
    assert isinstance(middle, FlowHandle)
    assert (await middle.job.fetch()).error["reason"] == "child_failed"  # type: ignore[index]
    assert (await handle.job.fetch()).error["reason"] == "child_failed"  # type: ignore[index]


def test_bulk_flows_in_one_call_per_queue(client: Client, tasks: Tasks, queue: str, raw: redis.Redis) -> None:
    @tasks.task
    def leaf(n: int) -> int:
        return n

    @tasks.task
    def root() -> None: ...

    handles = client.enqueue_flows([Flow(root.call(), [leaf.call(i) for i in range(3)]) for _ in range(200)])
    assert len(handles) == 200 and all(len(h.children) == 3 for h in handles)
    counts = client.counts(queue)
    assert counts["waiting_children"] == 200 and counts["waiting"] == 600
    page, total = client.list_jobs(queue, JobState.WAITING_CHILDREN, limit=5)
    assert total == 200 and all(job.children_pending == 3 for job in page)
    assert raw.hlen(client.keys(queue).flows) == 0, "a flow within one queue needs no record"


async def test_notes_left_behind_are_delivered_by_the_sweep(
    aclient: AsyncClient, tasks: Tasks, url: str, queue: str
) -> None:
    """A child that finished where no worker delivered its note (cancelled from a client,
    or a worker that died after acknowledging) still reaches its parent."""

    @tasks.task
    async def child() -> None: ...

    @tasks.task
    async def parent() -> None: ...

    handle = await aclient.enqueue_flow(Flow(parent.call(), [child.call(), child.call()]))
    assert await aclient.cancel(queue, handle.children[1].id) == "cancelled"  # type: ignore[union-attr]
    async with running_worker(tasks, url, sweep_interval=0.2):
        with pytest.raises(JobFailed, match="was cancelled"):
            await handle.job.result(timeout=10)
    assert await aclient.run(flow_ops.drain_outbox(aclient.keys(queue), ops.Retention(-1, -1))) == 0


def test_delivery_is_idempotent(client: Client, tasks: Tasks, queue: str) -> None:
    @tasks.task
    def child() -> None: ...

    @tasks.task
    def parent() -> None: ...

    handle = client.enqueue_flow(Flow(parent.call(), [child.call(), child.call()]))
    keys = client.keys(queue)
    ref = f"{queue} {handle.children[0].id}"  # type: ignore[union-attr]
    deliver = flow_ops.child_finished(keys, handle.job.id, ref, "c", "1", ops.Retention(-1, -1))
    assert client.run(deliver) == "waiting"
    again = flow_ops.child_finished(keys, handle.job.id, ref, "c", "1", ops.Retention(-1, -1))
    assert client.run(again) == "duplicate"
    assert client.get_job(queue, handle.job.id).children_pending == 1
    missing = flow_ops.child_finished(keys, "no-such-parent", ref, "c", "1", ops.Retention(-1, -1))
    assert client.run(missing) == "missing"


async def test_a_flow_whose_creator_died_half_way_is_finished_by_the_sweep(
    aclient: AsyncClient, tasks: Tasks, url: str, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = _other_queue()

    @tasks.task
    async def child(n: int) -> int:
        return n

    @tasks.task
    async def parent() -> int:
        return sum(c.result for c in current_job().children)

    flow = Flow(parent.call(), [child.with_options(queue=other).call(n) for n in (1, 2)])
    plan = flow_ops.plan_flows([flow], iter(["p-1", "c-1", "c-2"]), aclient._encode)
    assert list(plan.spanning) == [queue]
    # The creator wrote the record and the parent's queue, then died before the children's.
    await aclient.run(flow_ops.record_ops(aclient.keys(queue), plan.spanning[queue]))
    await aclient.run(flow_ops.write_plan(aclient.settings.prefix, plan.nodes[:1]))
    assert (await aclient.get_job(queue, "p-1")).state is JobState.WAITING_CHILDREN
    monkeypatch.setattr(flow_ops, "STALE_FLOW_RECORD_MS", 0)
    async with running_worker(tasks, url, queues=[queue, other], sweep_interval=0.2):
        assert await aclient.wait_result(queue, "p-1", timeout=10) == 3
        await wait_until(lambda: _no_records(aclient, queue))
    assert sorted(job.id for job in (await aclient.list_jobs(other, JobState.COMPLETED))[0]) == ["c-1", "c-2"]


async def _no_records(aclient: AsyncClient, queue: str) -> bool:
    return int(await aclient.run(_hlen(aclient.keys(queue).flows))) == 0


def _hlen(key: str) -> Any:
    return (yield ops.Command(("HLEN", key)))


def test_flow_validation() -> None:
    tasks = Tasks()

    @tasks.task
    def job() -> None: ...

    with pytest.raises(ValueError, match="at least one child"):
        Flow(job.call(), [])
    with pytest.raises(ValueError, match="on_child_failure"):
        Flow(job.call(), [job.call()], on_child_failure="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="two steps"):
        chain(job.call())


def test_malformed_notes_and_records_are_dropped_not_in_the_way(
    client: Client, tasks: Tasks, queue: str, raw: redis.Redis
) -> None:
    @tasks.task
    def child() -> None: ...

    @tasks.task
    def parent() -> None: ...

    handle = client.enqueue_flow(Flow(parent.call(), [child.call()]))
    keys = client.keys(queue)
    raw.rpush(
        keys.outbox,
        "not json",
        '{"id": "x"}',
        '{"id": "x", "pa": "bad{queue} y", "k": "c", "v": "1", "t": 1}',
    )
    good = {"id": handle.children[0].id, "pa": f"{queue} {handle.job.id}", "k": "c", "v": "7", "t": 1}  # type: ignore[union-attr]
    raw.rpush(keys.outbox, json.dumps(good))
    raw.hset(keys.flows, "broken", "{]")
    assert client.run(flow_ops.drain_outbox(keys, ops.Retention(-1, -1))) == 1
    assert raw.llen(keys.outbox) == 0
    assert client.get_job(queue, handle.job.id).state is JobState.WAITING
    assert client.run(flow_ops.replay_stale(keys, 0)) == 0
    assert raw.hlen(keys.flows) == 0

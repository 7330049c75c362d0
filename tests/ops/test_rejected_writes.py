"""Input that is refused writes nothing, not even the queue's name in the queues set.

A queue is listed (``client.queues()``, ``conveyor info``) from the moment a client first
writes to it. Registering it before the input was checked listed queues that never had a
job, on every path that writes jobs: one enqueue, a bulk, a flow, a schedule.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis

from conveyor import AsyncClient, Client, PayloadTooLarge, SerializationError, Tasks
from conveyor.flows import Flow
from conveyor.schedules import Schedule
from conveyor.task import TaskCall


def _tasks(queue: str) -> tuple[Any, Any]:
    tasks = Tasks(queue=queue)

    @tasks.task
    def add(x: int, y: int) -> int:
        return x + y

    @tasks.task
    def total(values: list[int]) -> int:
        return sum(values)

    return add, total


def assert_untouched(client: Client, raw: redis.Redis, *queues: str) -> None:
    for name in queues:
        assert name not in client.queues(), f"{name} was registered"
        assert list(raw.scan_iter(match=f"*{name}*")) == [], f"keys of {name} were written"


def test_a_first_single_enqueue_that_is_refused_registers_nothing(
    client: Client, raw: redis.Redis, queue: str
) -> None:
    add, _ = _tasks(queue)
    with pytest.raises(SerializationError):
        client.enqueue(add, object(), 1)
    assert_untouched(client, raw, queue)
    client.enqueue(add, 1, 2)  # the same client, once the input is good: registered now
    assert queue in client.queues()


async def test_the_async_face_registers_nothing_either(
    aclient: AsyncClient, client: Client, raw: redis.Redis, queue: str
) -> None:
    add, _ = _tasks(queue)
    with pytest.raises(SerializationError):
        await aclient.enqueue(add, object(), 1)
    assert_untouched(client, raw, queue)


def test_a_payload_over_the_limit_registers_nothing(
    url: str, client: Client, raw: redis.Redis, queue: str
) -> None:
    add, _ = _tasks(queue)
    with Client.from_url(url, max_payload_bytes=100) as small, pytest.raises(PayloadTooLarge):
        small.enqueue(add, "x" * 1000, 1)
    assert_untouched(client, raw, queue)


def test_a_bulk_with_one_bad_call_writes_nothing_on_any_of_its_queues(
    client: Client, raw: redis.Redis, queue: str
) -> None:
    add, _ = _tasks(queue)
    other = f"{queue}-other"
    calls = [add.call(1, 2), add.with_options(queue=other).call(3, 4), add.call(object(), 5)]
    with pytest.raises(SerializationError):
        client.enqueue_many(calls)
    assert_untouched(client, raw, queue, other)


def test_a_bad_queue_name_is_refused_before_any_queue_is_registered(
    client: Client, raw: redis.Redis, queue: str
) -> None:
    """A ``TaskCall`` made by hand skips ``with_options``' check of the queue name."""
    add, _ = _tasks(queue)
    bad = f"{queue} with spaces"
    with pytest.raises(ValueError, match="queue name"):
        client.enqueue_many([add.call(1, 2), TaskCall("add", (1, 2), queue=bad)])
    with pytest.raises(ValueError, match="queue name"):
        client.enqueue_many([TaskCall("add", (1, 2), queue=bad)])
    assert bad not in client.queues()
    assert_untouched(client, raw, queue)


def test_a_flow_with_a_bad_node_writes_nothing(client: Client, raw: redis.Redis, queue: str) -> None:
    add, total = _tasks(queue)
    other = f"{queue}-other"
    flow = Flow(total.call([]), [add.call(1, 2), add.with_options(queue=other).call(object(), 1)])
    with pytest.raises(SerializationError):
        client.enqueue_flow(flow)
    assert_untouched(client, raw, queue, other)


def test_a_flow_with_a_bad_queue_name_writes_nothing(client: Client, raw: redis.Redis, queue: str) -> None:
    add, total = _tasks(queue)
    bad = f"{queue} with spaces"
    with pytest.raises(ValueError, match="queue name"):
        client.enqueue_flow(Flow(total.call([]), [add.call(1, 2), TaskCall("add", (1, 2), queue=bad)]))
    assert bad not in client.queues()
    assert_untouched(client, raw, queue)


def test_a_schedule_with_bad_arguments_writes_nothing(client: Client, raw: redis.Redis, queue: str) -> None:
    bad = Schedule("nightly", "add", queue=queue, every=60, args=(object(),))
    with pytest.raises(SerializationError):
        client.add_schedule(bad)
    assert_untouched(client, raw, queue)

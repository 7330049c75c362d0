"""The lifecycle event stream of a queue: what happened to which job, without results."""

from __future__ import annotations

import asyncio
from typing import Any

from conveyor import AsyncClient, Client, Fixed, Tasks

from helpers import running_worker


async def test_events_follow_a_job_through_its_life(
    aclient: AsyncClient, tasks: Tasks, url: str, queue: str
) -> None:
    attempts = 0

    @tasks.task(retries=1, backoff=Fixed(0))
    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ValueError("first try fails")
        return "x" * 1000  # a large result must not travel in the events

    async with running_worker(tasks, url):
        handle = await aclient.enqueue(flaky)
        await handle.result(timeout=5)
    events, last = await aclient.read_events(queue)
    mine = [e for e in events if e.job_id == handle.id]
    assert [e.kind for e in mine] == ["enqueued", "active", "retrying", "active", "completed"]
    assert mine[1].fields["worker"] and mine[2].fields["delay"] == "0"
    assert all("x" * 100 not in str(e.fields) for e in events)
    again, same = await aclient.read_events(queue, after=last)
    assert again == [] and same == last


def test_bulk_and_batches_are_expanded_per_job(client: Client, queue: str) -> None:
    tasks = Tasks(queue=queue)

    @tasks.task
    async def noop() -> None: ...

    handles = client.enqueue_many([noop.call() for _ in range(30)])
    events, _ = client.read_events(queue)
    assert [e.job_id for e in events] == [h.id for h in handles]
    assert {e.kind for e in events} == {"enqueued"} and events[0].fields["count"] == "30"
    client.cancel(queue, handles[0].id)
    events, _ = client.read_events(queue, after=events[-1].stream_id)
    assert [(e.kind, e.job_id) for e in events] == [("cancelled", handles[0].id)]


async def test_follow_new_events_as_they_happen(
    aclient: AsyncClient, tasks: Tasks, url: str, queue: str
) -> None:
    @tasks.task
    async def report() -> None:
        from conveyor import current_job

        current_job().progress(42)

    seen: list[tuple[str, str]] = []

    async def follow() -> None:
        async for event in aclient.events(queue):
            seen.append((event.kind, event.fields.get("value", "")))
            if event.kind == "completed":
                return

    follower = asyncio.create_task(follow())
    await asyncio.sleep(0.1)  # following from "now": nothing earlier is replayed
    async with running_worker(tasks, url):
        await (await aclient.enqueue(report)).result(timeout=5)
        await asyncio.wait_for(follower, 10)
    assert [kind for kind, _ in seen] == ["enqueued", "active", "progress", "completed"]
    assert ("progress", "42") in seen


async def test_last_event_id_pins_now(client: Client, aclient: AsyncClient, queue: str) -> None:
    """What ``"$"`` means at this moment, on both faces: reading on from it misses nothing
    that happens afterwards (the API's event stream starts there)."""
    tasks = Tasks(queue=queue)

    @tasks.task
    async def noop() -> None: ...

    assert client.last_event_id(queue) == await aclient.last_event_id(queue) == "0-0"
    client.enqueue(noop)
    _, last = client.read_events(queue)
    pinned = await aclient.last_event_id(queue)
    assert pinned == client.last_event_id(queue) == last
    handle = client.enqueue(noop)
    events, _ = await aclient.read_events(queue, after=pinned)
    assert [e.job_id for e in events] == [handle.id]


def test_following_misses_nothing_between_two_reads(client: Client, tasks: Tasks, queue: str) -> None:
    """An event that happens after a read that got nothing, before the next read, is seen:
    following from "$" pins "$" once instead of reading from "$" again each time."""

    @tasks.task
    async def noop() -> None: ...

    reads = client.read_events
    enqueued: list[str] = []

    def read_then_enqueue(
        queue: str, after: str = "0-0", count: int = 1000, block: float | None = None
    ) -> Any:
        batch, position = reads(queue, after, count, block=0.05)
        if not batch and not enqueued:  # between this read and the next one
            enqueued.append(client.enqueue(noop).id)
        return batch, position

    client.read_events = read_then_enqueue  # type: ignore[method-assign]
    event = next(client.events(queue))
    assert event.kind == "enqueued" and event.job_id == enqueued[0]

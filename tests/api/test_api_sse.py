"""The server-sent events stream of a queue's lifecycle events, over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import orjson
import pytest

from conveyor import Tasks

from api_helpers import ThreadedUvicorn, auth, start_api
from helpers import running_worker


@pytest.fixture(scope="module")
def api(server_url: str) -> Iterator[ThreadedUvicorn]:
    server = start_api(server_url, max_streams=3)
    yield server
    server.stop()


@pytest.fixture
async def ahttp(api: ThreadedUvicorn) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api.base_url, headers=auth(), timeout=30) as c:
        yield c


async def _read_events(
    response: httpx.Response, connected: asyncio.Event | None = None
) -> list[tuple[str, str, dict]]:
    """(id, event, data) of each event until the server closes the stream."""
    events = []
    current: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line.startswith(": connected") and connected is not None:
            connected.set()
        elif line == "" and current:
            events.append((current["id"], current["event"], orjson.loads(current["data"])))
            current = {}
        elif not line.startswith(":") and ":" in line:
            name, _, value = line.partition(":")
            current[name] = value.strip()
    return events


async def test_lifecycle_events_stream(ahttp: httpx.AsyncClient, queue: str, url: str) -> None:
    tasks = Tasks(queue=queue)

    @tasks.task
    async def hello(name: str) -> str:
        return f"hello {name}"

    connected = asyncio.Event()
    async with ahttp.stream("GET", f"/v1/queues/{queue}/events", params={"limit": 6}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        reading = asyncio.create_task(_read_events(response, connected))
        await asyncio.wait_for(connected.wait(), 10)
        ids = []
        for name in ("a", "b"):
            made = await ahttp.post(f"/v1/queues/{queue}/jobs", json={"task": "hello", "args": [name]})
            ids.append(made.json()["id"])
        async with running_worker(tasks, url):
            events = await asyncio.wait_for(reading, 15)
    kinds = {(kind, data["job_id"]) for _, kind, data in events}
    for job_id in ids:
        assert {("enqueued", job_id), ("active", job_id), ("completed", job_id)} <= kinds
    assert all(data["queue"] == queue for *_, data in events)

    # Resume after the first event with Last-Event-ID: the stream replays what followed.
    first_id = events[0][0]
    async with ahttp.stream(
        "GET", f"/v1/queues/{queue}/events", params={"limit": 1}, headers={"Last-Event-ID": first_id}
    ) as again:
        replay = await asyncio.wait_for(_read_events(again), 10)
    assert replay[0][0] > first_id and (replay[0][1], replay[0][2]["job_id"]) == (
        events[1][1],
        events[1][2]["job_id"],
    )


async def test_bad_position_is_422(ahttp: httpx.AsyncClient, queue: str) -> None:
    bad = await ahttp.get(f"/v1/queues/{queue}/events", params={"after": "yesterday"})
    assert bad.status_code == 422 and bad.json()["field"] == "after"


async def test_stream_limit_answers_429(ahttp: httpx.AsyncClient, queue: str) -> None:
    opened = []
    try:
        for _ in range(3):
            stream = ahttp.stream("GET", f"/v1/queues/{queue}/events")
            response = await stream.__aenter__()
            lines = response.aiter_lines()  # kept: a dropped iterator would close the stream
            opened.append((stream, lines))
            assert response.status_code == 200
            assert (await lines.__anext__()).startswith(": connected")  # the slot is taken
        refused = await ahttp.get(f"/v1/queues/{queue}/events")
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert "CONVEYOR_API_MAX_STREAMS" in refused.json()["detail"]
        made = (await ahttp.post(f"/v1/queues/{queue}/jobs", json={"task": "t"})).json()["id"]
        polled = await ahttp.get(f"/v1/queues/{queue}/jobs/{made}/result", params={"timeout": 0})
        assert polled.status_code == 429
    finally:
        for stream, _ in opened:
            await stream.__aexit__(None, None, None)

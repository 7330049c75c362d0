"""``XREAD BLOCK`` on redis-py (Sentinel, Cluster): a read of the event stream that blocks longer
than the socket timeout is made of shorter reads (conveyor.redis.waits.sliced_wait), as the
popping waits are, and misses nothing that is appended between two of them."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from conveyor import AsyncClient, Client
from conveyor.redis.connect import sync_transport
from conveyor.redis.redispy import RedisPySyncTransport

pytestmark = pytest.mark.serial  # alone in make test (conftest.py): blocking reads timed

SOCKET_TIMEOUT = 0.6
"""Short, so that a block of a few of them is quick; each piece waits half of it."""


def _append(transport: Any, stream: str, job_id: str) -> Any:
    # The fields the event scripts write (e: kind, id: job); read_events parses them.
    return transport.call("XADD", stream, "*", "e", "enqueued", "id", job_id)


@pytest.mark.parametrize("topology", ["sentinel", "cluster"])
def test_a_blocking_read_of_events_outlasts_the_socket_timeout(
    topology: str, request: pytest.FixtureRequest, queue: str
) -> None:
    """A block of 5 socket timeouts, an event 1.5 socket timeouts in: it is returned (a single
    ``XREAD BLOCK`` failed with "Timeout reading from ..." after one socket timeout)."""
    url = request.getfixturevalue(topology).url + f"?socket_timeout={SOCKET_TIMEOUT}"
    with Client.from_url(url) as client, Client.from_url(url) as writer:
        stream = client.keys(queue).events
        appender = threading.Timer(1.5 * SOCKET_TIMEOUT, lambda: _append(writer.transport, stream, "late"))
        started = time.monotonic()
        appender.start()
        try:
            events, last = client.read_events(queue, "$", block=5 * SOCKET_TIMEOUT)
        finally:
            appender.join()
        assert [(e.kind, e.job_id) for e in events] == [("enqueued", "late")]
        assert last == events[0].stream_id
        assert 1.5 * SOCKET_TIMEOUT <= time.monotonic() - started < 4 * SOCKET_TIMEOUT


async def test_an_async_blocking_read_of_events_outlasts_the_socket_timeout(cluster: Any, queue: str) -> None:
    """The asyncio face (``AsyncClient.events`` blocks 5 s per read, as long as the asyncio
    cluster client's default socket timeout): nothing comes, then something does."""
    url = cluster.url + f"?socket_timeout={SOCKET_TIMEOUT}"
    async with AsyncClient.from_url(url) as client:
        stream = client.keys(queue).events
        first, _ = await client.read_events(queue, "$", block=3 * SOCKET_TIMEOUT)  # nothing comes
        assert first == []

        async def append_later() -> None:
            await asyncio.sleep(1.5 * SOCKET_TIMEOUT)
            await _append(client.transport, stream, "late")

        appender = asyncio.create_task(append_later())
        events, _ = await client.read_events(queue, "$", block=5 * SOCKET_TIMEOUT)
        await appender
        assert [e.job_id for e in events] == ["late"]


class _AppendsBetweenPieces(RedisPySyncTransport):
    """Appends an event to ``stream`` as soon as the first piece of a read has come back empty,
    before the next piece is sent: in the gap between two pieces, every time."""

    def __init__(self, client: Any, stream: str) -> None:
        super().__init__(client)
        self.stream = stream
        self.appended: str | None = None

    def call(self, *args: Any) -> Any:
        reply = super().call(*args)
        if args[0] == "XREAD" and not reply and self.appended is None:
            self.appended = str(_append(self, self.stream, "between"))
        return reply


@pytest.mark.parametrize("topology", ["sentinel", "cluster"])
def test_an_event_appended_between_two_pieces_is_not_missed(
    topology: str, request: pytest.FixtureRequest, queue: str
) -> None:
    """Reading from ``"$"`` (only new events): were each piece an ``XREAD ... $`` of its own, the
    event appended between two of them would come before the second one's ``$``, and be lost;
    ``$`` is pinned to the stream's last entry once, before the first piece."""
    redispy = sync_transport(request.getfixturevalue(topology).url + f"?socket_timeout={SOCKET_TIMEOUT}")
    assert isinstance(redispy, RedisPySyncTransport)
    with Client(redispy) as setup:
        stream = setup.keys(queue).events
        _append(setup.transport, stream, "before")  # already there: not new, not read
        transport = _AppendsBetweenPieces(redispy.client, stream)
        client = Client(transport)
        started = time.monotonic()
        events, _ = client.read_events(queue, "$", block=5 * SOCKET_TIMEOUT)
        assert transport.appended is not None, "the first piece returned something"
        assert [(e.job_id, e.stream_id) for e in events] == [("between", transport.appended)]
        assert time.monotonic() - started < 4 * SOCKET_TIMEOUT


@pytest.mark.parametrize("topology", ["sentinel", "cluster"])
def test_a_blocking_read_that_gets_nothing_returns_empty_after_the_block(
    topology: str, request: pytest.FixtureRequest, queue: str
) -> None:
    """Nothing comes: the read returns no events after about the block it asked for, from an
    empty stream and from one with old entries alike (``$`` pinned to them reads none)."""
    transport = sync_transport(request.getfixturevalue(topology).url + f"?socket_timeout={SOCKET_TIMEOUT}")
    with Client(transport) as client:
        stream = client.keys(queue).events
        for old in ([], ["old"]):
            for job_id in old:
                _append(transport, stream, job_id)
            started = time.monotonic()
            events, last = client.read_events(queue, "$", block=4 * SOCKET_TIMEOUT)
            took = time.monotonic() - started
            assert (events, last) == ([], "$"), old
            assert 4 * SOCKET_TIMEOUT - 0.05 <= took < 4 * SOCKET_TIMEOUT + 1.0, (old, took)
        # From a position in the stream as well.
        position = str(_append(transport, stream, "seen"))
        events, last = client.read_events(queue, position, block=3 * SOCKET_TIMEOUT)
        assert (events, last) == ([], position)


def test_a_group_read_outlasts_the_socket_timeout_too(cluster: Any, queue: str) -> None:
    """``XREADGROUP ... >`` is cut into pieces the same way (``>`` needs no pinning: the group
    remembers what it has handed out), and returns what is appended meanwhile."""
    transport = sync_transport(cluster.url + f"?socket_timeout={SOCKET_TIMEOUT}")
    stream = f"{{{queue}}}:group-read"
    try:
        transport.call("XGROUP", "CREATE", stream, "readers", "$", "MKSTREAM")
        appender = threading.Timer(1.5 * SOCKET_TIMEOUT, lambda: _append(transport, stream, "late"))
        appender.start()
        block = round(5 * SOCKET_TIMEOUT * 1000)
        try:
            reply = transport.call_blocking(
                "XREADGROUP", "GROUP", "readers", "one", "COUNT", 10, "BLOCK", block, "STREAMS", stream, ">"
            )
        finally:
            appender.join()
        [[name, [[_, fields]]]] = reply
        assert name == stream and fields == ["e", "enqueued", "id", "late"]
    finally:
        transport.call("DEL", stream)
        transport.close()

"""conveyor.redis.base: every transport implements the whole contract, and answers in the same
shapes on a plain server, behind Sentinel and on a Cluster, sync and async, whatever protocol
a redis-py client speaks (conveyor.redis.replies)."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.crc import key_slot

from conveyor import AsyncClient, Client, Tasks
from conveyor.dev.server import RedisServer
from conveyor.ops.scripts import LuaScript
from conveyor.ops.steps import Pipeline, Script
from conveyor.redis.base import AsyncTransport, SyncPipeline, SyncTransport
from conveyor.redis.connect import as_async_transport, as_sync_transport, async_transport, sync_transport
from conveyor.redis.executors import AsyncExecutor, SyncExecutor
from conveyor.redis.redispy import RedisPyAsyncTransport, RedisPySyncTransport, _InTurn
from conveyor.redis.replies import reshaped
from conveyor.redis.resp_async import FastAsyncTransport, _PinnedAsync
from conveyor.redis.resp_sync import FastSyncTransport, SyncPipe, _PinnedSync


def members(protocol: type) -> list[str]:
    return [name for name in vars(protocol) if not name.startswith("_")]


def has(implementation: type, name: str) -> bool:
    """A method or property of the class, or an attribute its ``__init__`` sets."""
    return hasattr(implementation, name) or name in implementation.__init__.__code__.co_names


@pytest.mark.parametrize(
    ("protocol", "implementations"),
    [
        (SyncTransport, [FastSyncTransport, _PinnedSync, RedisPySyncTransport]),
        (AsyncTransport, [FastAsyncTransport, _PinnedAsync, RedisPyAsyncTransport]),
        (SyncPipeline, [SyncPipe, _InTurn]),
    ],
)
def test_every_transport_implements_the_whole_contract(protocol: type, implementations: list[type]) -> None:
    """mypy checks the signatures (each module assigns its classes to their protocol); this
    keeps a member added to the contract from going unimplemented where mypy does not look."""
    assert members(protocol), "the contract declares nothing"
    for implementation in implementations:
        missing = [name for name in members(protocol) if not has(implementation, name)]
        assert not missing, (implementation.__name__, missing)


def commands(tag: str) -> list[tuple[Any, ...]]:
    """Commands the operations, the worker and the API send, and a few siblings; one slot."""
    h, s, z, members_key = f"{{{tag}}}:h", f"{{{tag}}}:s", f"{{{tag}}}:z", f"{{{tag}}}:m"
    return [
        ("HSET", h, "a", "1", "b", "2"),
        ("HGETALL", h),
        ("HGETALL", f"{{{tag}}}:missing"),
        ("HMGET", h, "a", "zz"),
        ("XADD", s, "1-1", "e", "x", "id", "7"),
        ("XADD", s, "1-2", "e", "y", "ids", "8,9"),
        ("XREAD", "COUNT", 10, "STREAMS", s, "0-0"),
        ("XREAD", "COUNT", 10, "STREAMS", s, "1-2"),
        ("XREAD", "COUNT", 10, "STREAMS", f"{{{tag}}}:none", "0-0"),
        ("XRANGE", s, "-", "+"),
        ("XREVRANGE", s, "+", "-", "COUNT", 1),
        ("ZADD", z, 1.5, "m", 2, "n", 1796657694721, "o"),
        ("ZRANGE", z, 0, -1),
        ("ZRANGE", z, 0, -1, "WITHSCORES"),
        ("ZRANGE", z, 0, 0, "WITHSCORES"),
        ("ZRANGEBYSCORE", z, "-inf", "+inf", "WITHSCORES", "LIMIT", 0, 10),
        ("ZRANGE", f"{{{tag}}}:none", 0, -1, "WITHSCORES"),
        ("ZPOPMIN", z),
        ("BZPOPMIN", z, 1),
        ("SADD", members_key, "q"),
        ("SMEMBERS", members_key),
        ("SCRIPT", "EXISTS", "0" * 40),
        ("CONFIG", "GET", "maxmemory-policy"),
        ("DEL", h, s, z, members_key),
    ]


def run_sync(transport: SyncTransport, tag: str) -> list[Any]:
    try:
        return [transport.call(*command) for command in commands(tag)]
    finally:
        transport.close()


async def run_async(transport: AsyncTransport, tag: str) -> list[Any]:
    try:
        return [await transport.call(*command) for command in commands(tag)]
    finally:
        await transport.aclose()


@pytest.fixture
def tag() -> str:
    return f"shape-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def expected(redis_server: RedisServer, tag: str) -> list[Any]:
    """The replies of the lean transport, over hiredis: the shapes every transport gives."""
    replies = run_sync(sync_transport(redis_server.url), tag)
    assert replies[1] == ["a", "1", "b", "2"] and replies[8] is None  # as Redis sends them
    return replies


@pytest.mark.parametrize("topology", ["sentinel", "cluster"])
async def test_redis_py_adapters_answer_in_the_shapes_of_the_lean_transports(
    topology: str, request: pytest.FixtureRequest, expected: list[Any], tag: str
) -> None:
    url = request.getfixturevalue(topology).url
    assert run_sync(sync_transport(url), tag) == expected
    assert await run_async(async_transport(url), tag) == expected


@pytest.mark.parametrize(
    "options",
    [
        {"protocol": 2},
        {"protocol": 3},
        {},
        {"protocol": 2, "legacy_responses": False},
        {"legacy_responses": False},
    ],
    ids=["resp2", "resp3", "default", "resp2-unified", "resp3-unified"],
)
async def test_a_redis_py_client_of_any_protocol_answers_in_the_same_shapes(
    redis_server: RedisServer, options: dict[str, Any], expected: list[Any], tag: str
) -> None:
    """redis-py parses replies differently by protocol and ``legacy_responses``; a client the
    user passes in may use any of them."""
    auth = {"port": redis_server.port, "password": redis_server.password, "decode_responses": True}
    assert run_sync(as_sync_transport(redis.Redis(**auth, **options)), tag) == expected
    assert await run_async(as_async_transport(redis.asyncio.Redis(**auth, **options)), tag) == expected


def test_reshaping_leaves_other_replies_as_redis_py_gives_them() -> None:
    assert reshaped(("EVALSHA", "0" * 40, 0), [1, "a"]) == [1, "a"]
    assert reshaped(("BLPOP", "k", 1), ("k", "v")) == ("k", "v")
    assert reshaped(("hgetall", "k"), {"a": "1"}) == ["a", "1"]  # any spelling of the name
    assert reshaped(("CONFIG", "SET", "x", "y"), True) is True


@pytest.mark.parametrize("topology", ["sentinel", "cluster"])
async def test_a_server_wide_command_answers_once_per_primary(
    topology: str, request: pytest.FixtureRequest, redis_server: RedisServer
) -> None:
    setup = request.getfixturevalue(topology)
    primaries = len(setup.nodes) if topology == "cluster" else 1
    lean = sync_transport(redis_server.url)
    try:
        one = lean.call_on_primaries("CONFIG", "GET", "maxmemory-policy")
    finally:
        lean.close()
    assert len(one) == 1 and one[0][0] == "maxmemory-policy"
    sync = sync_transport(setup.url)
    asynchronous = async_transport(setup.url)
    try:
        for replies in (
            sync.call_on_primaries("CONFIG", "GET", "maxmemory-policy"),
            await asynchronous.call_on_primaries("CONFIG", "GET", "maxmemory-policy"),
        ):
            assert replies == [["maxmemory-policy", "noeviction"]] * primaries
        assert (
            await asynchronous.call_on_primaries("SCRIPT", "EXISTS", "0" * 40, "1" * 40)
            == [[0, 0]] * primaries
        )
    finally:
        sync.close()
        await asynchronous.aclose()


def keys_in_different_slots(count: int) -> list[str]:
    keys = [f"pop-{uuid.uuid4().hex}:{i}" for i in range(count)]
    assert len({key_slot(key.encode()) for key in keys}) == count  # one command could not take them
    return keys


@pytest.mark.parametrize("topology", ["plain", "sentinel", "cluster"])
async def test_pop_any_returns_when_any_key_has_a_member(
    topology: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("redis_server" if topology == "plain" else topology).url
    keys = keys_in_different_slots(3)
    transport = async_transport(url)
    try:
        started = time.monotonic()
        await transport.pop_any("BZPOPMIN", keys, 0.3)  # nothing there: waits out the timeout
        assert 0.25 < time.monotonic() - started < 3

        async def add_later() -> None:
            await asyncio.sleep(0.3)
            await transport.call("ZADD", keys[-1], 0, "w")

        adding = asyncio.create_task(add_later())
        started = time.monotonic()
        await transport.pop_any("BZPOPMIN", keys, 10)
        assert time.monotonic() - started < 5
        await adding
        assert await transport.call("ZCARD", keys[-1]) == 0, "popped"
    finally:
        await transport.aclose()


def noop_tasks(queue: str) -> tuple[Tasks, Any]:
    tasks = Tasks(queue=queue)

    @tasks.task
    def noop(n: int) -> int:
        return n

    return tasks, noop


async def test_a_pinned_lean_transport_pipelines_a_bulk_enqueue_on_its_connection(
    sentinel: Any, queue: str
) -> None:
    """Durable enqueue pins one connection (WAIT counts its writes); a bulk enqueue is
    pipelined on it, sync and async, and the replica acknowledges every job."""
    _, noop = noop_tasks(queue)
    url = sentinel.primary.url  # a plain URL: the lean transports, with a replica behind
    with Client.from_url(url, durable_replicas=1, durable_timeout_ms=5000) as client:
        handles = client.enqueue_many([noop.call(i) for i in range(300)])
        assert len({h.id for h in handles}) == 300
        assert client.counts(queue)["waiting"] == 300
    async with AsyncClient.from_url(url, durable_replicas=1, durable_timeout_ms=5000) as aclient:
        ahandles = await aclient.enqueue_many([noop.call(i) for i in range(300)])
        assert len({h.id for h in ahandles}) == 300
        assert (await aclient.counts(queue))["waiting"] == 600


def _echo(script: LuaScript, key: str, *replies: Any) -> Sequence[Script]:
    return [Script(script, (key,), (reply,)) for reply in replies]


@pytest.mark.parametrize("topology", ["plain", "sentinel", "cluster"])
async def test_a_pipeline_reloads_flushed_scripts_and_keeps_replies_in_order(
    topology: str, request: pytest.FixtureRequest
) -> None:
    """Pipelined scripts after SCRIPT FLUSH: each meets NOSCRIPT, is loaded and run again,
    and the replies stay in the order of the scripts -- on redis-py too, which runs them
    one after the other."""
    source = f"return ARGV[1] -- {uuid.uuid4().hex}"  # a script no other test loads
    echo = LuaScript("test_echo", source, hashlib.sha1(source.encode()).hexdigest())
    key = f"{{echo-{uuid.uuid4().hex[:8]}}}"
    url = request.getfixturevalue("redis_server" if topology == "plain" else topology).url
    sync = SyncExecutor(sync_transport(url))
    asynchronous = AsyncExecutor(async_transport(url))
    try:
        for flush in (True, False):
            if flush:
                sync.transport.call_on_primaries("SCRIPT", "FLUSH")

            def pipeline() -> Any:
                return (yield Pipeline(iter(_echo(echo, key, "a", "b", "c")), lambda i, r: f"{i}{r}"))

            assert sync.run(pipeline()) == ["0a", "1b", "2c"]
            if flush:
                await asynchronous.transport.call_on_primaries("SCRIPT", "FLUSH")
            assert await asynchronous.run(pipeline()) == ["0a", "1b", "2c"]
    finally:
        sync.transport.close()
        await asynchronous.transport.aclose()

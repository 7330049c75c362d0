"""Connection URLs: TLS (rediss://, verified against a CA), unix sockets, ACL users, bad credentials,
and the timeouts every topology gets (a frozen server or sentinel is an error, not a hang)."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import trustme
from tls_proxy import TlsProxy

from conveyor import AsyncClient, Client, Tasks
from conveyor.dev.server import RedisServer
from conveyor.redis.connect import async_transport, sync_client, sync_transport
from conveyor.redis.redispy import connection_options

pytestmark = pytest.mark.serial  # alone in make test (conftest.py): socket timeouts measured


def noop_task(queue: str):  # type: ignore[no-untyped-def]
    tasks = Tasks(queue=queue)

    @tasks.task
    async def noop(n: int) -> int:
        return n

    return noop


@pytest.fixture
def tls(redis_server: RedisServer, tmp_path: Path) -> Iterator[tuple[TlsProxy, Path]]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    proxy = TlsProxy(redis_server.port, context).start()
    yield proxy, ca_file
    proxy.stop()


def test_tls_with_a_verified_certificate(
    tls: tuple[TlsProxy, Path], redis_server: RedisServer, queue: str
) -> None:
    proxy, ca_file = tls
    url = f"rediss://:{redis_server.password}@localhost:{proxy.port}/0?ssl_ca_certs={ca_file}"
    with Client.from_url(url) as client:
        handle = client.enqueue(noop_task(queue), 1)
        assert client.get_job(queue, handle.id).args == [1]


async def test_tls_async_face(tls: tuple[TlsProxy, Path], redis_server: RedisServer, queue: str) -> None:
    proxy, ca_file = tls
    url = f"rediss://:{redis_server.password}@localhost:{proxy.port}/0?ssl_ca_certs={ca_file}"
    async with AsyncClient.from_url(url) as client:
        handle = await client.enqueue(noop_task(queue), 2)
        assert (await client.counts(queue))["waiting"] == 1
        assert (await handle.fetch()).args == [2]


def test_tls_refuses_an_unknown_certificate_authority(
    tls: tuple[TlsProxy, Path], redis_server: RedisServer, queue: str
) -> None:
    proxy, _ = tls
    url = f"rediss://:{redis_server.password}@localhost:{proxy.port}/0"
    with Client.from_url(url) as client, pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        client.enqueue(noop_task(queue), 1)


def test_unix_socket(server_factory, tmp_path: Path, queue: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "redis.sock"
    server = server_factory(
        appendonly=False, extra_args=("--unixsocket", str(path), "--unixsocketperm", "700")
    )
    with Client.from_url(f"unix://{path}?password={server.password}") as client:
        handle = client.enqueue(noop_task(queue), 3)
        assert client.get_job(queue, handle.id).args == [3]


def test_acl_user_and_wrong_password(redis_server: RedisServer, queue: str) -> None:
    admin = f"redis://:{redis_server.password}@127.0.0.1:{redis_server.port}/0"
    with Client.from_url(admin) as client:
        client.transport.call("ACL", "SETUSER", "app", "on", ">app-pass", "~*", "&*", "+@all")
    with Client.from_url(f"redis://app:app-pass@127.0.0.1:{redis_server.port}/0") as app:
        assert app.enqueue(noop_task(queue), 4).created
    with (
        Client.from_url(f"redis://app:wrong@127.0.0.1:{redis_server.port}/0") as bad,
        pytest.raises(Exception, match="WRONGPASS"),
    ):
        bad.enqueue(noop_task(queue), 5)
    with Client.from_url(admin) as client:
        assert client.counts(queue)["waiting"] == 1, "the refused enqueue wrote nothing"


def test_unreachable_server_is_a_clear_connection_error(queue: str) -> None:
    with (
        Client.from_url("redis://127.0.0.1:1/0") as client,
        pytest.raises(redis.ConnectionError, match=r"127\.0\.0\.1:1"),
    ):
        client.enqueue(noop_task(queue), 1)


async def test_cluster_waits_longer_than_the_socket_timeout(cluster: Any) -> None:
    """redis-py holds a blocking command's reply to its socket timeout (the asyncio cluster
    client's default is 5 s, which failed every idle worker's 5 s wait for work): a longer
    wait is made of shorter ones, and still returns what arrives meanwhile."""
    transport = async_transport(cluster.url + "?socket_timeout=1")
    try:
        started = time.monotonic()
        assert await transport.call_blocking("BLPOP", "{wait}:empty", 2.5) is None
        assert 2.4 < time.monotonic() - started < 4.5

        async def push_later() -> None:
            await asyncio.sleep(1.6)
            await transport.call("RPUSH", "{wait}:later", "x")

        pusher = asyncio.create_task(push_later())
        assert await transport.call_blocking("BLPOP", "{wait}:later", 0) == ("{wait}:later", "x")
        await pusher
        # The worker's form: the wait, then a command the server runs right after it.
        replies = await transport.call_blocking_many([("BZPOPMIN", "{wait}:marker", 1.5), ("PING",)])
        assert replies[0] is None and replies[1] in (True, "PONG")
    finally:
        await transport.aclose()


def _timeouts_of(transport: Any) -> tuple[float | None, float | None]:
    """A redis-py transport's (socket_timeout, socket_connect_timeout)."""
    options = connection_options(transport.client)
    return options["socket_timeout"], options["socket_connect_timeout"]


@pytest.mark.parametrize("topology", ["sentinel", "cluster"])
async def test_sentinel_and_cluster_get_the_same_timeouts_as_plain_urls(
    topology: str, request: pytest.FixtureRequest
) -> None:
    """redis-py waits forever by default (its asyncio cluster client: 5 s), so a Sentinel
    client hung on a half-open connection, and a Sentinel URL's ``?socket_timeout=`` was
    ignored. Every topology now has the plain URLs' defaults, and the URL's own values."""
    url = request.getfixturevalue(topology).url
    cases = [
        ("", (60.0, 10.0)),
        ("?socket_timeout=2.5&socket_connect_timeout=1", (2.5, 1.0)),
        ("?socket_timeout=0", (None, 10.0)),
    ]
    for query, expected in cases:
        sync = sync_transport(url + query)
        asynchronous = async_transport(url + query)
        try:
            assert _timeouts_of(sync) == expected, query
            assert _timeouts_of(asynchronous) == expected, query
        finally:
            sync.close()
            await asynchronous.aclose()
    heartbeat = sync_transport(url + "?socket_timeout=30", timeout=2.0)  # the heartbeat's: at most
    try:
        assert _timeouts_of(heartbeat) == (2.0, 2.0)
    finally:
        heartbeat.close()


@pytest.mark.parametrize("topology", ["sentinel", "cluster"])
def test_sync_waits_longer_than_the_socket_timeout(topology: str, request: pytest.FixtureRequest) -> None:
    """The sync face of ``test_cluster_waits_longer_than_the_socket_timeout``: with a socket
    timeout on every topology, a sync wait for a result (``BLPOP``) longer than it is made of
    shorter waits, and still returns what arrives meanwhile."""
    transport = sync_transport(request.getfixturevalue(topology).url + "?socket_timeout=0.8")
    try:
        started = time.monotonic()
        assert transport.call_blocking("BLPOP", "{wait}:empty", 2) is None
        assert 1.9 < time.monotonic() - started < 4.0
        transport.call("DEL", "{wait}:later")
        pusher = threading.Timer(1.3, lambda: transport.call("RPUSH", "{wait}:later", "x"))
        pusher.start()
        assert list(transport.call_blocking("BLPOP", "{wait}:later", 0)) == ["{wait}:later", "x"]
        pusher.join()
    finally:
        transport.close()


@pytest.mark.parametrize("topology", ["sentinel", "cluster"])
def test_a_server_that_stops_answering_is_a_timeout_not_a_hang(
    topology: str, request: pytest.FixtureRequest, queue: str
) -> None:
    """Every server of the topology frozen (SIGSTOP) for a moment, shorter than the time after
    which the sentinel or the cluster would call it down: a sync producer gets a timeout
    error after its ``socket_timeout``, and goes on once the servers answer again."""
    setup = request.getfixturevalue(topology)
    servers = setup.nodes if topology == "cluster" else [setup.primary]
    noop = noop_task(queue)
    with Client.from_url(setup.url + "?socket_timeout=0.4") as client:
        client.enqueue(noop, 1)  # connected, scripts loaded
        for server in servers:
            os.kill(server.process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(redis.TimeoutError):
                client.enqueue(noop, 2)
            waited = time.monotonic() - started
        finally:
            for server in servers:
                os.kill(server.process.pid, signal.SIGCONT)
        assert waited < 1.2
        assert client.enqueue(noop, 3).fetch().state == "waiting"


def test_a_sentinel_that_stops_answering_is_an_error_not_a_hang(sentinel: Any) -> None:
    """Finding the primary asks the sentinels; redis-py gave those connections no timeout
    (it passes the primary's only when given no sentinel options, and Conveyor's carry the
    credentials), so one frozen sentinel held the discovery forever. Now it fails after the
    URL's socket timeout, for the plain client and for the transport that follows failovers
    (whose watcher has not heard from any sentinel yet)."""
    url = sentinel.url + "?socket_timeout=0.4"
    os.kill(sentinel.sentinel.process.pid, signal.SIGSTOP)
    try:
        client = sync_client(url)
        started = time.monotonic()
        with pytest.raises(redis.RedisError, match="No master found"):
            client.ping()
        assert time.monotonic() - started < 2.0
        client.close()
        transport = sync_transport(url)
        started = time.monotonic()
        with pytest.raises(redis.RedisError, match="No master found"):
            transport.call("PING")
        assert time.monotonic() - started < 2.0
        transport.close()
    finally:
        os.kill(sentinel.sentinel.process.pid, signal.SIGCONT)
    transport = sync_transport(sentinel.url)  # and once it answers again, all is well
    try:
        assert transport.call("PING") in (True, "PONG")
    finally:
        transport.close()

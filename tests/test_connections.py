"""Connection URLs: TLS (rediss://, verified against a CA), unix sockets, ACL users, bad credentials."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from tls_proxy import TlsProxy

from conveyor import AsyncClient, Client, Tasks
from conveyor.connection import async_transport
from conveyor.server import RedisServer


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
    import redis

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

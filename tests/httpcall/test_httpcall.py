"""The built-in HTTP-call task, run by a real worker against a local HTTP server that
answers, times out, fails with 5xx, rate-limits with Retry-After and resets connections."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from conveyor import AsyncClient, Fixed, JobFailed, Tasks
from conveyor.httpcall import (
    HTTP_CALL,
    SIGNATURE_HEADER,
    HttpCallSettings,
    OutboundPolicy,
    OutboundRefused,
    parse_request,
    register_http_task,
    retry_after_seconds,
    verify,
)

from api_helpers import RawHttpServer, Received
from helpers import running_worker

SECRET = "callback-secret"
LOCAL = HttpCallSettings(allow_networks=("127.0.0.1/32",), callback_secret=SECRET, max_body_bytes=100)


async def ok(request: Received, count: int) -> tuple[int, dict[str, str], bytes]:
    body = orjson.dumps({"method": request.method, "got": request.body.decode(), "count": count})
    return 200, {"content-type": "application/json", "x-secret": "dropped"}, body


@contextlib.asynccontextmanager
async def harness(
    queue: str, url: str, settings: HttpCallSettings = LOCAL, **handlers: Any
) -> AsyncIterator[tuple[AsyncClient, RawHttpServer]]:
    tasks = Tasks(queue=queue)
    caller = register_http_task(tasks, settings)
    server = RawHttpServer({f"/{name}": handler for name, handler in handlers.items()})
    async with server, AsyncClient.from_url(url) as client, running_worker(tasks, url):
        try:
            yield client, server
        finally:
            await caller.aclose()


def call(queue: str, **options: Any) -> Any:
    return HTTP_CALL.with_options(queue=queue, backoff=Fixed(0.05), **options)


async def test_success_keeps_status_selected_headers_and_capped_body(queue: str, url: str) -> None:
    async def big(request: Received, count: int) -> tuple[int, dict[str, str], bytes]:
        return 201, {"location": "/things/1"}, b"x" * 1000

    async with harness(queue, url, ok=ok, big=big) as (client, server):
        handle = await client.enqueue(
            call(queue), url=f"{server.url}/ok", method="POST", json={"a": 1}, headers={"X-Token": "t"}
        )
        result = await handle.result(timeout=10)
        assert result["status"] == 200 and result["truncated"] is False
        assert orjson.loads(result["body"]) == {"method": "POST", "got": '{"a":1}', "count": 1}
        assert set(result["headers"]) == {"content-type", "content-length"}  # x-secret not kept
        sent = server.received[0]
        assert sent.headers["x-token"] == "t" and sent.headers["content-type"] == "application/json"
        assert sent.headers["host"] == f"127.0.0.1:{server.port}"
        capped = await (await client.enqueue(call(queue), url=f"{server.url}/big")).result(timeout=10)
        assert capped["status"] == 201 and capped["truncated"] is True and len(capped["body"]) == 100
        assert capped["headers"]["location"] == "/things/1"


async def test_5xx_is_retried_then_dead_lettered(queue: str, url: str) -> None:
    async def flaky(request: Received, count: int) -> tuple[int, dict[str, str], bytes]:
        return (502, {}, b"bad gateway") if count < 3 else (200, {}, b"fine")

    async def down(request: Received, count: int) -> tuple[int, dict[str, str], bytes]:
        return 500, {}, b"boom"

    async with harness(queue, url, flaky=flaky, down=down) as (client, server):
        recovered = await client.enqueue(call(queue, retries=3), url=f"{server.url}/flaky")
        assert (await recovered.result(timeout=10))["body"] == "fine"
        assert (await recovered.fetch()).attempts == 3
        dead = await client.enqueue(call(queue, retries=2), url=f"{server.url}/down")
        with pytest.raises(JobFailed) as failed:
            await dead.result(timeout=10)
        assert "answered 500" in str(failed.value) and server.hits["/down"] == 3


async def test_4xx_fails_at_once_but_408_is_retried(queue: str, url: str) -> None:
    async def missing(request: Received, count: int) -> tuple[int, dict[str, str], bytes]:
        return 404, {}, b"no"

    async def slow_client(request: Received, count: int) -> tuple[int, dict[str, str], bytes]:
        return (408, {}, b"") if count == 1 else (204, {}, b"")

    async with harness(queue, url, missing=missing, slow_client=slow_client) as (client, server):
        gone = await client.enqueue(call(queue, retries=5), url=f"{server.url}/missing")
        with pytest.raises(JobFailed, match="answered 404; not retried"):
            await gone.result(timeout=10)
        assert server.hits["/missing"] == 1 and (await gone.fetch()).attempts == 1
        again = await client.enqueue(call(queue, retries=5), url=f"{server.url}/slow_client")
        assert (await again.result(timeout=10))["status"] == 204
        assert server.hits["/slow_client"] == 2
        ok_404 = await client.enqueue(call(queue), url=f"{server.url}/missing", success=[404])
        assert (await ok_404.result(timeout=10))["status"] == 404


async def test_retry_after_does_not_spend_an_attempt(queue: str, url: str) -> None:
    async def limited(request: Received, count: int) -> tuple[int, dict[str, str], bytes]:
        if count <= 2:
            return 429 if count == 1 else 503, {"retry-after": "1"}, b"slow down"
        return 200, {}, b"ok"

    async with harness(queue, url, limited=limited) as (client, server):
        loop = asyncio.get_running_loop()
        started = loop.time()
        handle = await client.enqueue(call(queue, retries=0), url=f"{server.url}/limited")
        assert (await handle.result(timeout=15))["body"] == "ok"
        assert loop.time() - started >= 1.9  # waited out both Retry-After answers
        assert server.hits["/limited"] == 3
        assert (await handle.fetch()).attempts == 1  # retries=0, yet it ran three times


async def test_timeout_and_connection_reset_are_retried(queue: str, url: str) -> None:
    async def hang(request: Received, count: int) -> tuple[int, dict[str, str], bytes]:
        if count == 1:
            await asyncio.sleep(5)
        return 200, {}, b"late but fine"

    async def reset(request: Received, count: int) -> tuple[int, dict[str, str], bytes] | None:
        return None if count < 3 else (200, {}, b"back")

    async def stuck(request: Received, count: int) -> tuple[int, dict[str, str], bytes]:
        await asyncio.sleep(5)
        return 200, {}, b""

    async with harness(queue, url, hang=hang, reset=reset, stuck=stuck) as (client, server):
        slow = await client.enqueue(call(queue, retries=2), url=f"{server.url}/hang", timeout=0.3)
        resets = await client.enqueue(call(queue, retries=3), url=f"{server.url}/reset")
        assert (await slow.result(timeout=10))["body"] == "late but fine"
        job = await slow.fetch()
        assert job.attempts == 2
        assert (await resets.result(timeout=10))["body"] == "back"
        assert server.hits["/reset"] == 3
        never = await client.enqueue(call(queue, retries=1), url=f"{server.url}/stuck", timeout=0.2)
        with pytest.raises(JobFailed, match=r"no response within 0\.2 s|timed out"):
            await never.result(timeout=10)


async def test_signed_completion_callback(queue: str, url: str) -> None:
    got: list[Received] = []
    arrived = asyncio.Event()

    async def hook(request: Received, count: int) -> tuple[int, dict[str, str], bytes]:
        got.append(request)
        if len(got) == 2:
            arrived.set()
        return 204, {}, b""

    async def missing(request: Received, count: int) -> tuple[int, dict[str, str], bytes]:
        return 404, {}, b""

    async with harness(queue, url, ok=ok, hook=hook, missing=missing) as (client, server):
        done = await client.enqueue(call(queue), url=f"{server.url}/ok", callback_url=f"{server.url}/hook")
        await done.result(timeout=10)
        failed = await client.enqueue(
            call(queue), url=f"{server.url}/missing", callback_url=f"{server.url}/hook"
        )
        with pytest.raises(JobFailed):
            await failed.result(timeout=10)
        await asyncio.wait_for(arrived.wait(), 10)
    first, second = (orjson.loads(r.body) for r in got)
    assert first["state"] == "completed" and first["job_id"] == done.id and first["result"]["status"] == 200
    assert second["state"] == "failed" and second["job_id"] == failed.id and "404" in second["error"]
    for request in got:
        assert verify(SECRET, request.body, request.headers[SIGNATURE_HEADER.lower()])
        assert not verify("wrong", request.body, request.headers[SIGNATURE_HEADER.lower()])
        assert not verify(SECRET, request.body + b" ", request.headers[SIGNATURE_HEADER.lower()])


async def test_outbound_safety(queue: str, url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, "conveyor.worker")
    default = HttpCallSettings()  # loopback not allowed
    denied = HttpCallSettings(allow_networks=("127.0.0.0/8",), deny_hosts=("*.internal", "localhost"))
    async with harness(queue, url, default, ok=ok) as (client, server):
        refused = await client.enqueue(call(queue, retries=3), url=f"{server.url}/ok")
        with pytest.raises(JobFailed, match=r"resolves to 127\.0\.0\.1, a loopback address"):
            await refused.result(timeout=10)
        assert server.hits == {} and (await refused.fetch()).attempts == 1
        by_name = await client.enqueue(call(queue), url=f"http://localhost:{server.port}/ok")
        with pytest.raises(JobFailed, match="loopback"):  # checked after DNS resolution
            await by_name.result(timeout=10)
    async with harness(queue, url, denied, ok=ok) as (client, server):
        deny = await client.enqueue(call(queue), url=f"http://localhost:{server.port}/ok")
        with pytest.raises(JobFailed, match="deny list"):
            await deny.result(timeout=10)
        allowed = await client.enqueue(call(queue), url=f"{server.url}/ok")
        assert (await allowed.result(timeout=10))["status"] == 200


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.1",
        "172.16.5.5",
        "169.254.169.254",
        "::1",
        "fe80::1",
        "fd00:ec2::254",
        "::ffff:10.0.0.1",
        "0.0.0.0",
        "100.100.100.200",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    with pytest.raises(OutboundRefused):
        OutboundPolicy(HttpCallSettings()).check_address("h", address)


def test_policy_lists_and_allowed_networks() -> None:
    policy = OutboundPolicy(HttpCallSettings(allow_hosts=("*.example.com",), allow_networks=("10.0.0.0/8",)))
    policy.check_address("h", "10.9.9.9")
    policy.check_address("h", "93.184.216.34")
    policy.check_host("api.example.com")
    with pytest.raises(OutboundRefused, match="allow list"):
        policy.check_host("example.org")


def test_request_validation_names_the_field() -> None:
    assert parse_request({"url": "https://x.example/a"}).timeout == 90.0
    for kwargs, field in [
        ({}, "url"),
        ({"url": "ftp://x"}, "url"),
        ({"url": "https://u:p@x.example"}, "url"),
        ({"url": "https://x.example", "method": "BREW"}, "method"),
        ({"url": "https://x.example", "timeout": 0}, "timeout"),
        ({"url": "https://x.example", "timeout": 10**9}, "timeout"),
        ({"url": "https://x.example", "headers": {"a": 1}}, "headers"),
        ({"url": "https://x.example", "json": {}, "body": "x"}, "body"),
        ({"url": "https://x.example", "success": [99]}, "success"),
        ({"url": "https://x.example", "callback_url": "nope"}, "callback_url"),
        ({"url": "https://x.example", "extra": 1}, "extra"),
    ]:
        with pytest.raises(ValueError, match=f"^{field}:"):
            parse_request(kwargs)


def test_retry_after_parsing() -> None:
    assert retry_after_seconds("5") == 5.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


async def test_https_with_a_private_ca_checks_the_name(queue: str, url: str, tmp_path: Any) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_tls)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    settings = HttpCallSettings(allow_networks=("127.0.0.0/8", "::1/128"), ca_file=str(ca_file))
    tasks = Tasks(queue=queue)
    caller = register_http_task(tasks, settings)
    async with (
        RawHttpServer({"/ok": ok}, tls=server_tls) as server,
        AsyncClient.from_url(url) as client,
        running_worker(tasks, url),
    ):
        good = await client.enqueue(call(queue), url=f"https://localhost:{server.port}/ok")
        assert (await good.result(timeout=10))["status"] == 200  # resolved, checked, name verified
        wrong_name = await client.enqueue(call(queue, retries=0), url=f"https://127.0.0.1:{server.port}/ok")
        with pytest.raises(JobFailed, match=r"certificate|hostname|SSL"):
            await wrong_name.result(timeout=10)
        await caller.aclose()


async def test_the_worker_closes_the_pooled_session_when_it_stops(queue: str, url: str) -> None:
    tasks = Tasks(queue=queue)
    caller = register_http_task(tasks, LOCAL)
    async with RawHttpServer({"/ok": ok}) as server, AsyncClient.from_url(url) as client:
        async with running_worker(tasks, url):
            handle = await client.enqueue(call(queue), url=f"{server.url}/ok")
            assert (await handle.result(timeout=10))["status"] == 200
            session = caller._session
            assert session is not None and not session.closed
        assert session.closed and caller._session is None

"""The built-in HTTP-call task, run by a real worker against a local HTTP server that
answers, times out, fails with 5xx, rate-limits with Retry-After and resets connections."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor import AsyncClient, Fixed, JobFailed, Tasks
from conveyor.httpcall import (
    HTTP_CALL,
    SIGNATURE_HEADER,
    CheckingResolver,
    HttpCallSettings,
    OutboundPolicy,
    OutboundRefused,
    is_public,
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


@pytest.mark.serial  # alone in make test (conftest.py): answers due within 0.3 s
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


# Issue 14: IPv6 forms that carry a non-public IPv4 address, and non-public IPv6 ranges.
ISSUE_14 = [
    "::127.0.0.1",  # IPv4-compatible
    "::ffff:0:7f00:1",  # IPv4-translated (SIIT) 127.0.0.1
    "64:ff9b::7f00:1",  # NAT64 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 169.254.169.254, the cloud metadata service
    "2002:7f00:1::1",  # 6to4 through 127.0.0.1
    "fec0::1",  # site-local
]
NON_PUBLIC = [
    *ISSUE_14,
    "127.0.0.1",
    "10.1.2.3",
    "192.168.0.1",
    "172.16.5.5",
    "169.254.169.254",
    "100.100.100.200",  # CGNAT (Alibaba's metadata address)
    "0.0.0.0",
    "0.1.2.3",
    "192.0.0.8",
    "192.0.2.1",
    "198.18.0.1",
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "::1",
    "::",
    "fe80::1",
    "fd00:ec2::254",  # unique-local (AWS's IPv6 metadata address)
    "fc00::1",
    "ff02::1",
    "ff0e::1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::10.0.0.1",
    "::ffff:0:a9fe:a9fe",
    "64:ff9b::a00:1",
    "64:ff9b::6440:1",  # NAT64 100.64.0.1
    "64:ff9b:1::808:808",  # local-use NAT64 prefix: not global, whatever it carries
    "2002:a9fe:a9fe::1",  # 6to4 through the metadata address
    "2002:c0a8:1::1",  # 6to4 through 192.168.0.1
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo, client 192.0.2.45 (documentation)
    "2001:0:808:808::f5ff:fffe",  # Teredo, public server, client 10.0.0.1
    "2001:0:a00:1::f7f7:f7f7",  # Teredo, server 10.0.0.1, public client
    "100::1",  # discard-only
    "2001:2::1",  # benchmarking
    "2001:20::1",  # ORCHIDv2
    "2001:1::3",  # IETF protocol assignments
    "2001:db8::1",  # documentation
    "3fff::1",  # documentation (RFC 9637)
    "5f00::1",  # outside global unicast
    "::1:0:0:1",  # reserved
    "fe00::1",  # reserved
]
PUBLIC = [
    "8.8.8.8",
    "93.184.216.34",
    "2606:4700:4700::1111",
    "2a00:1450:4001:82a::200e",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",  # NAT64 8.8.8.8
    "2002:808:808::1",  # 6to4 through 8.8.8.8
    "2001:0:808:808::f7f7:f7f7",  # Teredo, server and client 8.8.8.8
]


@pytest.mark.parametrize("address", NON_PUBLIC)
def test_non_public_addresses_are_refused(address: str) -> None:
    policy = OutboundPolicy(HttpCallSettings())
    with pytest.raises(OutboundRefused, match=r"resolves to \S+, .* calls there are refused"):
        policy.check_address("h", address)
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(OutboundRefused, match="calls there are refused"):  # a literal in the URL
        policy.check_url(f"http://{host}:8080/hook")
    assert not is_public(address)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    policy = OutboundPolicy(HttpCallSettings())
    policy.check_address("h", address)
    policy.check_url(f"http://{f'[{address}]' if ':' in address else address}/hook")
    assert is_public(address)


def test_the_refusal_names_the_embedded_address() -> None:
    policy = OutboundPolicy(HttpCallSettings())
    for address, embeds in [
        ("::127.0.0.1", r"127\.0\.0\.1 \(IPv4-compatible\), a loopback address"),
        ("::ffff:0:7f00:1", r"127\.0\.0\.1 \(IPv4-translated\), a loopback address"),
        ("64:ff9b::a9fe:a9fe", r"169\.254\.169\.254 \(NAT64\), a link-local \(cloud metadata\) address"),
        ("2002:7f00:1::1", r"127\.0\.0\.1 \(6to4\), a loopback address"),
        ("2001:0:808:808::f5ff:fffe", r"10\.0\.0\.1 \(Teredo\), a private address"),
    ]:
        shown = re.escape(str(ipaddress.ip_address(address)))
        with pytest.raises(OutboundRefused, match=f"resolves to {shown}, which embeds {embeds}"):
            policy.check_url(f"https://[{address}]/hook")
    with pytest.raises(OutboundRefused, match=r"resolves to fec0::1, a site-local \(private\) address"):
        policy.check_url("https://[fec0::1]/hook")


@pytest.mark.parametrize("address", [*ISSUE_14, "2002:a9fe:a9fe::1", "2001:db8::1", "::ffff:10.0.0.1"])
async def test_names_resolving_to_non_public_forms_are_refused(address: str) -> None:
    # The connector resolves names through this resolver; a numeric name goes through the
    # same getaddrinfo call as a DNS name, without needing a hosts file or a DNS server.
    resolver = CheckingResolver(OutboundPolicy(HttpCallSettings()))
    try:
        with pytest.raises(OutboundRefused, match="calls there are refused"):
            await resolver.resolve(address, 443, socket.AF_UNSPEC)
        answers = await resolver.resolve("64:ff9b::808:808", 443, socket.AF_UNSPEC)
        assert [answer["host"] for answer in answers] == ["64:ff9b::808:808"]
    finally:
        await resolver.close()


def _ipv4s() -> st.SearchStrategy[ipaddress.IPv4Address]:
    edges = ["0.0.0.0", "10.0.0.1", "100.64.0.1", "127.0.0.1", "169.254.169.254", "172.31.255.255",
             "192.0.0.1", "192.168.1.1", "198.19.0.1", "203.0.113.9", "224.0.0.1", "255.255.255.255",
             "1.1.1.1", "8.8.8.8", "100.63.255.255", "172.32.0.1"]  # fmt: skip
    return st.one_of(
        st.sampled_from([ipaddress.IPv4Address(edge) for edge in edges]),
        st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address),
    )


@settings(max_examples=300, deadline=None)
@given(inner=_ipv4s())
def test_ipv6_forms_are_judged_by_the_ipv4_they_carry(inner: ipaddress.IPv4Address) -> None:
    v4 = int(inner)
    public_v4 = 0x08080808
    forms = [
        (0xFFFF << 32) | v4,  # mapped
        (0xFFFF << 48) | v4,  # translated
        (0x64FF9B << 96) | v4,  # NAT64
        (0x2002 << 112) | (v4 << 80) | 1,  # 6to4
        (0x20010000 << 96) | (v4 << 64) | (public_v4 ^ 0xFFFFFFFF),  # Teredo server
        (0x20010000 << 96) | (public_v4 << 64) | (v4 ^ 0xFFFFFFFF),  # Teredo client
    ]
    if v4 > 1:
        forms.append(v4)  # IPv4-compatible (:: and ::1 are themselves)
    for form in forms:
        assert is_public(ipaddress.IPv6Address(form)) == is_public(inner), ipaddress.IPv6Address(form)


def test_allowed_networks_cover_the_forms_that_carry_their_addresses() -> None:
    policy = OutboundPolicy(HttpCallSettings(allow_networks=("10.0.0.0/8", "fec0::/10")))
    for address in ["10.1.2.3", "::ffff:10.1.2.3", "64:ff9b::a01:203", "2002:a01:203::1", "fec0::1"]:
        policy.check_address("h", address)
    for address in ["64:ff9b::7f00:1", "2002:7f00:1::1", "fc00::1"]:
        with pytest.raises(OutboundRefused):
            policy.check_address("h", address)
    OutboundPolicy(HttpCallSettings(allow_networks=("64:ff9b::/96",))).check_address("h", "64:ff9b::7f00:1")


async def test_issue_14_literals_fail_the_job_with_the_policy_error(queue: str, url: str) -> None:
    default = HttpCallSettings()
    async with harness(queue, url, default, ok=ok) as (client, server):
        targets = [f"http://[{address}]:{server.port}/ok" for address in ISSUE_14]
        for target in targets:
            # Checked first so that a broken policy fails here rather than letting the
            # worker connect: these addresses route off this machine.
            with pytest.raises(OutboundRefused):
                OutboundPolicy(default).check_url(target)
        handles = [await client.enqueue(call(queue, retries=3), url=target) for target in targets]
        for handle, address in zip(handles, ISSUE_14, strict=True):
            shown = re.escape(str(ipaddress.ip_address(address)))
            with pytest.raises(JobFailed, match=f"resolves to {shown}, .*calls there are refused"):
                await handle.result(timeout=10)
            assert (await handle.fetch()).attempts == 1  # refused, not retried as a connect error
        assert server.hits == {}


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

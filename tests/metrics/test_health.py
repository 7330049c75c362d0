"""Redis's health: ``conveyor health``, ``/readyz`` and the warnings at worker and API start,
against private servers set up in the ways that lose jobs (an evicting policy, no persistence,
memory nearly full, CONFIG refused as on managed Redis)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
import redis

from conveyor import AsyncClient, Client, Tasks
from conveyor.dev.server import RedisServer, free_port
from conveyor.metrics import redis_health
from conveyor.metrics.exposition import render
from conveyor.metrics.redis_health import RedisHealth

from api_helpers import start_api
from helpers import run_cli, running_worker, wait_until

LOST = "JOBS CAN BE LOST"
"""What the start-up warning says (the worker's older CONFIG-based warning does not)."""

LIMITED_USER, LIMITED_PASSWORD = "limited", "limited-password-1"


@pytest.fixture
def server(server_factory: Any) -> RedisServer:
    """A private server with AOF on and the default noeviction: healthy."""
    return server_factory()  # type: ignore[no-any-return]


@pytest.fixture
def admin(server: RedisServer) -> Iterator[redis.Redis]:
    """A plain client of the private server, to set it up badly."""
    with redis.Redis(port=server.port, password=server.password, decode_responses=True) as made:
        yield made


@pytest.fixture
def limited_url(server: RedisServer, admin: redis.Redis) -> str:
    """A user that may do anything but CONFIG, as managed Redis services allow."""
    admin.execute_command(
        "ACL", "SETUSER", LIMITED_USER, "on", f">{LIMITED_PASSWORD}", "~*", "&*", "+@all", "-config"
    )
    return f"redis://{LIMITED_USER}:{LIMITED_PASSWORD}@127.0.0.1:{server.port}/0"


def health_json(url: str, code: int) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(run_cli(url, "health", "--json", code=code).stdout)
    return document


def by_name(document: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {check["name"]: check for check in document["checks"]}


def test_healthy_server_exits_0(server: RedisServer, admin: redis.Redis) -> None:
    document = health_json(server.url, 0)
    assert document["status"] == "ok", document
    assert {check["status"] for check in document["checks"]} == {"ok"}
    info = admin.info("server")
    # Valkey says redis_version 7.2.4 for compatibility: the report names the real product.
    assert document["redis"]["server"] == f"valkey {info['valkey_version']}"
    assert document["redis"]["eviction_policy"] == "noeviction" and document["redis"]["aof_enabled"] is True
    table = run_cli(server.url, "health").stdout
    assert "eviction_policy" in table and "noeviction" in table and "FAIL" not in table


def test_help_documents_the_exit_codes(server: RedisServer) -> None:
    out = run_cli(server.url, "health", "--help").stdout
    assert "0  healthy" in out and "1  a check failed" in out and "2  Redis is unreachable" in out
    assert "health" in run_cli(server.url, "--help").stdout


def test_an_evicting_policy_fails_the_check(server: RedisServer, admin: redis.Redis) -> None:
    admin.config_set("maxmemory-policy", "allkeys-lru")
    document = health_json(server.url, 1)
    eviction = by_name(document)["eviction_policy"]
    assert document["status"] == "fail" and eviction["status"] == "fail"
    assert "allkeys-lru" in eviction["message"] and "noeviction" in eviction["message"]
    assert "FAIL" in run_cli(server.url, "health", code=1).stdout


def test_persistence_off_is_only_a_warning(server: RedisServer, admin: redis.Redis) -> None:
    admin.config_set("appendonly", "no")
    admin.config_set("save", "")
    document = health_json(server.url, 0)
    persistence = by_name(document)["persistence"]
    assert document["status"] == "warn" and persistence["status"] == "warn"
    assert document["redis"]["persistence_enabled"] is False and document["redis"]["save_points"] == ""
    admin.config_set("save", "3600 1")  # RDB snapshots alone: persisted, with the loss window said
    with Client.from_url(server.url) as client:
        [check] = [c for c in redis_health.checks(redis_health.read(client)) if c.name == "persistence"]
    assert check.status == "ok" and "3600 1" in check.message and "since the last snapshot" in check.message


@pytest.mark.serial  # it bounds how long the command takes
def test_unreachable_exits_2_quickly() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    started = time.monotonic()
    document = health_json(url, 2)
    assert time.monotonic() - started < 15
    assert document["status"] == "unreachable" and document["redis"] is None
    assert by_name(document)["redis"]["status"] == "fail"
    assert "cannot reach Redis" in run_cli(url, "health", code=2).stdout


def test_memory_headroom(server: RedisServer, admin: redis.Redis) -> None:
    """80 % of maxmemory warns, 90 % fails; maxmemory is set against what the server uses now.
    A 16 MiB value makes what the reads themselves allocate (buffers, a connection) a small
    share of the whole, so that it cannot move the server across a threshold. It is made by
    a short command: a 16 MiB SET would sit in the client's query buffer (and the AOF
    buffer) too, until Redis frees them a moment later, halving the share."""
    admin.setrange("ballast", 16 * 1024 * 1024 - 1, "x")

    def limit(share: float) -> int:
        maxmemory = int(admin.info("memory")["used_memory"] / share)
        admin.config_set("maxmemory", maxmemory)
        return maxmemory

    statuses = {}
    with Client.from_url(server.url) as client:
        for share in (0.5, 0.85, 1.0):
            maxmemory = limit(share)
            found = redis_health.read(client)
            [check] = [c for c in redis_health.checks(found) if c.name == "memory"]
            statuses[share] = check.status
            assert found.max_memory == maxmemory
    assert statuses == {0.5: "ok", 0.85: "warn", 1.0: "fail"}
    limit(1.0)
    assert by_name(health_json(server.url, 1))["memory"]["status"] == "fail"


def test_memory_thresholds_are_inclusive(server: RedisServer) -> None:
    with Client.from_url(server.url) as client:
        found = redis_health.read(client)

    def status(used: int, limit: int) -> str:
        checked = redis_health.checks(replace(found, used_memory=used, max_memory=limit))
        return next(c.status for c in checked if c.name == "memory")

    assert [status(799, 1000), status(800, 1000), status(899, 1000), status(900, 1000)] == [
        "ok",
        "warn",
        "warn",
        "fail",
    ]
    assert status(10**12, 0) == "ok"  # no maxmemory: no headroom to judge


def test_config_refused_reads_info_and_leaves_save_points_unknown(
    server: RedisServer, admin: redis.Redis, limited_url: str
) -> None:
    with Client.from_url(limited_url) as limited:
        with pytest.raises(Exception, match="NOPERM"):
            limited.transport.call("CONFIG", "GET", "save")
        found = redis_health.read(limited)
        assert found.save_points is None and found.aof_enabled and found.persistence_enabled is True
        admin.config_set("appendonly", "no")
        admin.config_set("maxmemory-policy", "volatile-lru")
        found = redis_health.read(limited)
    checked = {check.name: check for check in redis_health.checks(found)}
    assert found.persistence_enabled is None and checked["persistence"].status == "warn"
    assert "unknown" in checked["persistence"].message
    assert checked["eviction_policy"].status == "fail"  # INFO tells the policy, CONFIG or not
    document = health_json(limited_url, 1)
    assert document["redis"]["save_points"] is None and document["redis"]["persistence_enabled"] is None


async def test_both_faces_and_redis_py_read_the_same(server: RedisServer, admin: redis.Redis) -> None:
    admin.config_set("maxmemory", 512 * 1024 * 1024)
    admin.config_set("maxmemory-policy", "allkeys-lfu")
    with Client.from_url(server.url) as client:
        sync = redis_health.read(client)
    async with AsyncClient.from_url(server.url) as aclient:
        async_ = await redis_health.aread(aclient)
    # redis-py parses INFO into a dict (the Sentinel and Cluster transports get that shape).
    parsed = RedisHealth.from_info(admin.info(), sync.save_points)
    for found in (sync, async_, parsed):
        assert (found.product, found.max_memory, found.eviction_policy, found.aof_enabled) == (
            "valkey",
            512 * 1024 * 1024,
            "allkeys-lfu",
            True,
        )
        assert found.version == sync.version and found.used_memory > 0 and found.connected_clients >= 1


def test_families(server: RedisServer, admin: redis.Redis, limited_url: str) -> None:
    admin.config_set("maxmemory-policy", "allkeys-lru")
    admin.config_set("maxmemory", 256 * 1024 * 1024)
    with Client.from_url(server.url) as client:
        found = redis_health.read(client)
    text = render(redis_health.families(found))
    lines = set(text.splitlines())
    assert "conveyor_redis_up 1" in lines
    assert f"conveyor_redis_memory_max_bytes {256 * 1024 * 1024}" in lines
    assert "conveyor_redis_eviction_policy_safe 0" in lines
    assert "conveyor_redis_persistence_enabled 1" in lines
    assert (
        f'conveyor_redis_info{{version="{found.server}",eviction_policy="allkeys-lru",aof_enabled="1"}} 1'
        in lines
    )
    assert "# TYPE conveyor_redis_ops_per_second gauge" in lines
    assert any(line.startswith("conveyor_redis_connected_clients ") for line in lines)
    assert render(redis_health.families(None)).splitlines()[-1] == "conveyor_redis_up 0"
    admin.config_set("appendonly", "no")
    with Client.from_url(limited_url) as limited:  # AOF off, save points unreadable: unknown
        unknown = render(redis_health.families(redis_health.read(limited)))
    assert "conveyor_redis_persistence_enabled" not in unknown and "conveyor_redis_up 1" in unknown


async def test_worker_start_warns_of_an_evicting_policy(
    server: RedisServer, admin: redis.Redis, limited_url: str, tasks: Tasks, caplog: pytest.LogCaptureFixture
) -> None:
    """Through a user without CONFIG, as on managed Redis: the warning comes from INFO."""
    caplog.set_level(logging.WARNING, logger="conveyor.worker")
    admin.config_set("maxmemory-policy", "allkeys-random")
    async with running_worker(tasks, limited_url):
        await wait_until(lambda: any(LOST in r.getMessage() for r in caplog.records))
    [warning] = [r for r in caplog.records if LOST in r.getMessage()]
    assert warning.levelno == logging.WARNING and warning.name == "conveyor.worker"
    assert "allkeys-random" in warning.getMessage()


async def test_worker_start_is_quiet_on_a_safe_server(
    server: RedisServer, tasks: Tasks, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="conveyor.worker")

    @tasks.task
    async def noop() -> None: ...

    async with AsyncClient.from_url(server.url) as aclient:
        await aclient.enqueue(noop)
        async with running_worker(tasks, server.url) as worker:
            # A job is claimed only once the start, and its check of Redis, is over.
            await wait_until(lambda: worker.processed == 1, timeout=30)
    assert not [r for r in caplog.records if LOST in r.getMessage()]


def test_readyz_and_api_start_reflect_an_evicting_policy(
    server: RedisServer, admin: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="conveyor.api")
    admin.config_set("maxmemory-policy", "volatile-ttl")
    api = start_api(server.url)
    try:
        with httpx.Client(base_url=api.base_url, timeout=30) as http:
            response = http.get("/readyz")
            # Still ready: a shared Redis setting must not take every replica out of rotation.
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["status"] == "ready" and body["health"] == "fail"
            eviction = by_name(body)["eviction_policy"]
            assert eviction["status"] == "fail" and "volatile-ttl" in eviction["message"]
            deadline = time.monotonic() + 10
            while not any(LOST in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline, "no warning at API start"
                time.sleep(0.02)
            admin.config_set("maxmemory-policy", "noeviction")
            after = http.get("/readyz").json()  # read on every probe, not cached
            assert by_name(after)["eviction_policy"]["status"] == "ok" and after["health"] == "ok"
    finally:
        api.stop()
    [warning] = [r for r in caplog.records if LOST in r.getMessage()]
    assert warning.name == "conveyor.api" and "volatile-ttl" in warning.getMessage()

"""/metrics (Prometheus text) and /v1/queues/{queue}/figures over real HTTP."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from conveyor import Client, Tasks, Worker

from api_helpers import ThreadedUvicorn, auth, problem, start_api

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


@pytest.fixture(scope="module")
def api(server_url: str) -> Iterator[ThreadedUvicorn]:
    server = start_api(server_url)
    yield server
    server.stop()


def parse(text: str) -> dict[str, float]:
    """Every sample as ``name{labels}`` -> value; asserts each line is well formed and each
    family has exactly one HELP and one TYPE line before its samples."""
    samples: dict[str, float] = {}
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            name = line.split()[2]
            if line.startswith("# TYPE "):
                assert name not in typed, f"two TYPE lines for {name}"
                typed.add(name)
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name = match.group(1)
        assert any(name == t or name.startswith(t + "_") for t in typed), f"{name} before its TYPE"
        key = name + (match.group(2) or "")
        assert key not in samples, f"{key} twice"
        samples[key] = float(match.group(3))
    return samples


def drain(url: str, queue: str) -> None:
    tasks = Tasks(queue=queue)

    @tasks.task
    async def ok(i: int) -> int:
        return i

    @tasks.task(retries=0)
    async def broken() -> None:
        raise RuntimeError("no")

    with Client.from_url(url) as client:
        client.enqueue_many([ok.call(i) for i in range(7)])
        client.enqueue(broken)
        Worker(tasks, url=url, burst=True, concurrency=4).run()
        client.enqueue(ok, 99)  # one left waiting


def test_metrics_count_what_the_fleet_did(http: httpx.Client, server_url: str, queue: str) -> None:
    drain(server_url, queue)
    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = parse(response.text)
    q = f'queue="{queue}"'
    assert samples[f"conveyor_queue_jobs_completed_total{{{q}}}"] == 7
    assert samples[f"conveyor_queue_jobs_failed_total{{{q}}}"] == 1
    assert samples[f"conveyor_queue_jobs_retried_total{{{q}}}"] == 0
    assert samples[f'conveyor_queue_jobs{{{q},state="waiting"}}'] == 1
    assert samples[f'conveyor_queue_jobs{{{q},state="completed"}}'] == 7
    assert samples[f"conveyor_queue_dead_letters{{{q}}}"] == 1
    assert samples[f"conveyor_queue_wait_seconds_count{{{q}}}"] == 8
    assert samples[f'conveyor_queue_wait_seconds_bucket{{{q},le="+Inf"}}'] == 8
    assert samples[f"conveyor_queue_run_seconds_count{{{q}}}"] == 8
    assert samples[f"conveyor_queue_oldest_waiting_age_seconds{{{q}}}"] >= 0
    assert samples[f"conveyor_queue_paused{{{q}}}"] == 0
    assert samples["conveyor_redis_up"] == 1 and samples["conveyor_redis_memory_used_bytes"] > 0
    buckets = [v for k, v in samples.items() if k.startswith("conveyor_queue_run_seconds_bucket{" + q)]
    assert buckets == sorted(buckets), "cumulative buckets never decrease"


def test_figures_as_json(http: httpx.Client, server_url: str, queue: str) -> None:
    drain(server_url, queue)
    body = http.get(f"/v1/queues/{queue}/figures", params={"minutes": 3}).json()
    assert body["queue"] == queue and len(body["minutes"]) == 4
    assert body["totals"]["completed"] == 7 and body["totals"]["failed"] == 1
    assert body["totals"]["wait"]["count"] == 8 and body["counts"]["waiting"] == 1
    assert len(body["totals"]["run"]["buckets"]) == len(body["bucket_bounds_seconds"]) + 1
    assert sum(m["completed"] for m in body["minutes"]) == 7
    problem(http.get(f"/v1/queues/{queue}/figures", params={"minutes": 5000}), 422)


def test_metrics_need_the_read_scope_when_tokens_are_on(server_url: str) -> None:
    server = start_api(server_url)
    try:
        with httpx.Client(base_url=server.base_url) as http:
            problem(http.get("/metrics"), 401)
            ok = http.get("/metrics", headers=auth("read"))
            assert ok.status_code == 200 and "conveyor_redis_up 1" in ok.text
    finally:
        server.stop()


def test_metrics_without_redis_say_so() -> None:
    server = start_api("redis://127.0.0.1:1/0")
    try:
        with httpx.Client(base_url=server.base_url) as http:
            response = http.get("/metrics", headers=auth("read"))
            assert response.status_code == 200
            assert parse(response.text)["conveyor_redis_up"] == 0
    finally:
        server.stop()


async def test_a_redis_that_does_not_answer_is_down_within_the_scrape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server that takes connections and never answers (a listening socket nobody
    accepts from: the kernel completes the handshake): the scrape says Redis is down in
    time, instead of hanging past Prometheus' scrape timeout."""
    import asyncio
    import socket

    from conveyor import AsyncClient
    from conveyor.metrics import fleet
    from conveyor.metrics.exposition import render

    monkeypatch.setattr(fleet, "READ_TIMEOUT", 0.5)
    with socket.create_server(("127.0.0.1", 0), backlog=16) as silent:
        port = silent.getsockname()[1]
        client = AsyncClient.from_url(f"redis://127.0.0.1:{port}/0")
        try:
            began = asyncio.get_running_loop().time()
            text = render(await fleet.collect(client, ["q"]))
            assert asyncio.get_running_loop().time() - began < 3
            assert parse(text)["conveyor_redis_up"] == 0
        finally:
            await client.close()

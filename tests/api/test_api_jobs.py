"""The job endpoints over real HTTP: a uvicorn server, a real Redis, real workers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from conveyor import Client, Tasks

from api_helpers import ThreadedUvicorn, problem, start_api
from helpers import running_worker


@pytest.fixture(scope="module")
def api(server_url: str) -> Iterator[ThreadedUvicorn]:
    server = start_api(server_url, max_payload_bytes=10_000, max_body_bytes=200_000)
    yield server
    server.stop()


def _waiting(http: httpx.Client, queue: str) -> int:
    """Jobs waiting in the queue; 0 when the queue does not exist (404)."""
    answer = http.get(f"/v1/queues/{queue}/jobs", params={"state": "waiting"})
    return 0 if answer.status_code == 404 else int(answer.json()["total"])


# ---------------------------------------------------------------------------- enqueue
def test_enqueue_then_get(http: httpx.Client, queue: str) -> None:
    r = http.post(
        f"/v1/queues/{queue}/jobs", json={"task": "add", "args": [1, 2], "kwargs": {"z": 3}, "priority": 5}
    )
    assert r.status_code == 201
    body = r.json()
    assert body["created"] is True and body["outcome"] == "created" and body["queue"] == queue
    job = http.get(f"/v1/queues/{queue}/jobs/{body['id']}").json()
    assert job["state"] == "waiting" and job["args"] == [1, 2] and job["kwargs"] == {"z": 3}
    assert job["priority"] == 5 and job["attempts"] == 0 and job["created_at"] and job["logs"] == []
    assert "token" not in job


def test_enqueue_with_options(http: httpx.Client, queue: str) -> None:
    r = http.post(
        f"/v1/queues/{queue}/jobs",
        json={"task": "t", "delay": 60, "retries": 0, "timeout": 5, "job_id": "mine-1"},
    )
    assert r.status_code == 201 and r.json()["id"] == "mine-1"
    job = http.get(f"/v1/queues/{queue}/jobs/mine-1").json()
    assert job["state"] == "delayed" and job["options"] == {"retries": 0, "timeout": 5.0}
    again = http.post(f"/v1/queues/{queue}/jobs", json={"task": "t", "job_id": "mine-1"})
    assert again.status_code == 200 and again.json()["outcome"] == "existed"


def test_idempotency_key(http: httpx.Client, queue: str) -> None:
    body = {"task": "charge", "args": [42]}
    first = http.post(f"/v1/queues/{queue}/jobs", json=body, headers={"Idempotency-Key": "order-42"})
    second = http.post(f"/v1/queues/{queue}/jobs", json=body, headers={"Idempotency-Key": "order-42"})
    assert first.status_code == 201 and second.status_code == 200
    assert first.json()["id"] == second.json()["id"] and second.json()["created"] is False
    page = http.get(f"/v1/queues/{queue}/jobs", params={"state": "waiting"}).json()
    assert page["total"] == 1
    other = http.post(
        f"/v1/queues/{queue}/jobs",
        json={"task": "charge", "args": [43]},
        headers={"Idempotency-Key": "order-42"},
    )
    assert problem(other, 409)["field"] == "Idempotency-Key"
    both = http.post(
        f"/v1/queues/{queue}/jobs", json={**body, "job_id": "x"}, headers={"Idempotency-Key": "order-43"}
    )
    assert problem(both, 400)["field"] == "job_id"


def test_enqueue_errors_name_the_field(http: httpx.Client, queue: str) -> None:
    assert problem(http.post(f"/v1/queues/{queue}/jobs", json={"args": []}), 422)["field"] == "task"
    assert (
        problem(http.post(f"/v1/queues/{queue}/jobs", json={"task": "t", "delay": -1}), 422)["field"]
        == "delay"
    )
    assert (
        problem(http.post(f"/v1/queues/{queue}/jobs", json={"task": "t", "nope": 1}), 422)["field"] == "nope"
    )
    bad_time = http.post(f"/v1/queues/{queue}/jobs", json={"task": "t", "run_at": "2030-01-01T00:00:00"})
    assert problem(bad_time, 422)["field"] == "run_at"
    both = http.post(
        f"/v1/queues/{queue}/jobs", json={"task": "t", "delay": 1, "run_at": "2030-01-01T00:00:00Z"}
    )
    problem(both, 422)
    bad_json = http.post(
        f"/v1/queues/{queue}/jobs", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert problem(bad_json, 400)["field"] == "body"
    bad_queue = http.post("/v1/queues/has space/jobs", json={"task": "t"})
    assert problem(bad_queue, 422)["field"] == "queue"


def test_oversize_payload_and_body(http: httpx.Client, queue: str) -> None:
    big_args = http.post(f"/v1/queues/{queue}/jobs", json={"task": "t", "args": ["x" * 20_000]})
    assert "limit" in problem(big_args, 413)["detail"]
    huge = http.post(
        f"/v1/queues/{queue}/jobs/bulk", json={"jobs": [{"task": "t", "args": ["x" * 5_000]}] * 50}
    )
    problem(huge, 413)
    assert _waiting(http, queue) == 0


def test_bulk_enqueue(http: httpx.Client, queue: str) -> None:
    jobs = [{"task": "add", "args": [i, i]} for i in range(500)] + [{"task": "add", "job_id": "fixed"}]
    r = http.post(f"/v1/queues/{queue}/jobs/bulk", json={"jobs": jobs})
    assert r.status_code == 201 and r.json()["created"] == 501
    assert len({j["id"] for j in r.json()["jobs"]}) == 501
    again = http.post(f"/v1/queues/{queue}/jobs/bulk", json={"jobs": [{"task": "add", "job_id": "fixed"}]})
    assert again.json()["created"] == 0 and again.json()["jobs"][0]["outcome"] == "existed"
    bad = http.post(
        f"/v1/queues/{queue}/jobs/bulk", json={"jobs": [{"task": "a"}, {"task": "b", "delay": -5}]}
    )
    assert problem(bad, 422)["field"] == "jobs[1].delay"
    assert problem(http.post(f"/v1/queues/{queue}/jobs/bulk", json={"jobs": []}), 422)["field"] == "jobs"
    assert http.get(f"/v1/queues/{queue}").json()["counts"]["waiting"] == 501


# ---------------------------------------------------------------------------- one job
def test_missing_job_is_404(http: httpx.Client, queue: str) -> None:
    for method, path in [
        ("GET", "nope"),
        ("GET", "nope/result?timeout=0"),
        ("POST", "nope/cancel"),
        ("POST", "nope/retry"),
        ("POST", "nope/promote"),
        ("DELETE", "nope"),
    ]:
        problem(http.request(method, f"/v1/queues/{queue}/jobs/{path}"), 404)


async def test_wait_for_result_and_logs(ahttp: httpx.AsyncClient, queue: str, url: str) -> None:
    tasks = Tasks(queue=queue)

    @tasks.task
    async def add(x: int, y: int) -> int:
        from conveyor import current_job

        current_job().log(f"adding {x} and {y}")
        current_job().progress({"step": 1})
        return x + y

    @tasks.task(retries=0)
    async def boom() -> None:
        raise ValueError("no good")

    ok = (await ahttp.post(f"/v1/queues/{queue}/jobs", json={"task": "add", "args": [2, 3]})).json()["id"]
    bad = (await ahttp.post(f"/v1/queues/{queue}/jobs", json={"task": "boom"})).json()["id"]
    pending = await ahttp.get(f"/v1/queues/{queue}/jobs/{ok}/result", params={"timeout": 0.1})
    assert pending.status_code == 200 and pending.json() == {"id": ok, "done": False, "state": "waiting"}
    async with running_worker(tasks, url):
        done = (await ahttp.get(f"/v1/queues/{queue}/jobs/{ok}/result", params={"timeout": 10})).json()
        assert done == {"id": ok, "done": True, "state": "completed", "result": 5}
        failed = (await ahttp.get(f"/v1/queues/{queue}/jobs/{bad}/result", params={"timeout": 10})).json()
        assert failed["done"] and failed["state"] == "failed" and failed["error"]["type"] == "ValueError"
    job = (await ahttp.get(f"/v1/queues/{queue}/jobs/{ok}")).json()
    assert job["state"] == "completed" and job["result"] == 5 and job["attempts"] == 1
    assert job["logs"] == ["adding 2 and 3"] and job["progress"] == {"step": 1}
    assert job["started_at"] and job["finished_at"] and job["worker"]
    # retry the failed job: back to waiting
    retried = await ahttp.post(f"/v1/queues/{queue}/jobs/{bad}/retry")
    assert retried.status_code == 200 and retried.json()["state"] == "waiting"
    problem(await ahttp.post(f"/v1/queues/{queue}/jobs/{ok}/retry"), 409)
    bad_timeout = await ahttp.get(f"/v1/queues/{queue}/jobs/{ok}/result", params={"timeout": -1})
    assert problem(bad_timeout, 422)["field"] == "timeout"


def test_cancel_promote_remove(http: httpx.Client, queue: str, client: Client) -> None:
    later = http.post(f"/v1/queues/{queue}/jobs", json={"task": "t", "delay": 3600}).json()["id"]
    now = http.post(f"/v1/queues/{queue}/jobs", json={"task": "t"}).json()["id"]
    promoted = http.post(f"/v1/queues/{queue}/jobs/{later}/promote")
    assert promoted.status_code == 200 and promoted.json() == {"id": later, "state": "waiting"}
    assert client.get_job(queue, later).state == "waiting"
    assert "not delayed" in problem(http.post(f"/v1/queues/{queue}/jobs/{later}/promote"), 409)["detail"]
    cancelled = http.post(f"/v1/queues/{queue}/jobs/{now}/cancel", json={"reason": "changed my mind"})
    assert cancelled.json() == {"id": now, "state": "cancelled"}
    job = http.get(f"/v1/queues/{queue}/jobs/{now}").json()
    assert job["state"] == "cancelled" and job["error"]["message"] == "changed my mind"
    problem(http.post(f"/v1/queues/{queue}/jobs/{now}/cancel"), 409)
    removed = http.delete(f"/v1/queues/{queue}/jobs/{now}")
    assert removed.json() == {"id": now, "removed_from": "cancelled"}
    problem(http.get(f"/v1/queues/{queue}/jobs/{now}"), 404)


async def test_abort_running_job(ahttp: httpx.AsyncClient, queue: str, url: str) -> None:
    import asyncio

    tasks = Tasks(queue=queue)
    started = asyncio.Event()

    @tasks.task
    async def sleepy() -> None:
        started.set()
        await asyncio.sleep(30)

    job_id = (await ahttp.post(f"/v1/queues/{queue}/jobs", json={"task": "sleepy"})).json()["id"]
    async with running_worker(tasks, url, lease=1.5):
        await asyncio.wait_for(started.wait(), 10)
        aborting = await ahttp.post(f"/v1/queues/{queue}/jobs/{job_id}/cancel")
        assert aborting.json()["state"] == "aborting"
        problem(await ahttp.delete(f"/v1/queues/{queue}/jobs/{job_id}"), 409)  # running: cannot remove
        waited = (await ahttp.get(f"/v1/queues/{queue}/jobs/{job_id}/result", params={"timeout": 10})).json()
        assert waited["done"] and waited["state"] == "cancelled"


async def test_http_call_job_over_the_api(ahttp: httpx.AsyncClient, queue: str, url: str) -> None:
    from conveyor.httpcall import HttpCallSettings, register_http_task

    from api_helpers import RawHttpServer, Received

    async def hook(request: Received, count: int) -> tuple[int, dict[str, str], bytes]:
        return 200, {"content-type": "application/json"}, b'{"pong": true}'

    bad = await ahttp.post(
        f"/v1/queues/{queue}/jobs", json={"task": "conveyor.http", "kwargs": {"url": "file:///etc/passwd"}}
    )
    assert problem(bad, 422)["detail"].startswith("kwargs.url")
    tasks = Tasks(queue=queue)
    caller = register_http_task(tasks, HttpCallSettings(allow_networks=("127.0.0.1/32",)))
    async with RawHttpServer({"/ping": hook}) as target, running_worker(tasks, url):
        made = await ahttp.post(
            f"/v1/queues/{queue}/jobs",
            json={
                "task": "conveyor.http",
                "kwargs": {"url": f"{target.url}/ping", "method": "POST", "json": {}},
            },
        )
        assert made.status_code == 201
        done = (
            await ahttp.get(f"/v1/queues/{queue}/jobs/{made.json()['id']}/result", params={"timeout": 10})
        ).json()
        await caller.aclose()
    assert done["state"] == "completed" and done["result"]["status"] == 200
    assert done["result"]["body"] == '{"pong": true}'


def test_chunked_body_over_the_cap_is_413(http: httpx.Client, queue: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"jobs": ['
        for _ in range(5_000):
            yield b'{"task": "t", "args": ["' + b"x" * 100 + b'"]},'
        yield b'{"task": "t"}]}'

    r = http.post(
        f"/v1/queues/{queue}/jobs/bulk", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 413 and "content-length" not in r.request.headers
    assert _waiting(http, queue) == 0


async def test_a_long_poll_ends_when_its_client_goes_away(
    ahttp: httpx.AsyncClient, queue: str, raw: redis.Redis
) -> None:
    """A client that gives up on a 60 s long poll must not keep a Redis connection blocked
    (and a stream slot held) for the rest of the minute."""
    job = (await ahttp.post(f"/v1/queues/{queue}/jobs", json={"task": "t"})).json()["id"]

    def blocked() -> int:  # connections blocked right now, on every primary of a cluster
        if isinstance(raw, redis.cluster.RedisCluster):
            lists = [raw.client_list(target_nodes=node) for node in raw.get_primaries()]
        else:
            lists = [raw.client_list()]
        return sum(1 for clients in lists for c in clients if "b" in c["flags"])

    before = blocked()
    poll = asyncio.ensure_future(ahttp.get(f"/v1/queues/{queue}/jobs/{job}/result", params={"timeout": 60}))
    deadline = time.monotonic() + 10
    while blocked() == before:
        if poll.done():
            pytest.fail(f"the long poll ended early: {poll.result().status_code} {poll.result().text}")
        assert time.monotonic() < deadline, "the long poll never reached Redis"
        await asyncio.sleep(0.05)
    poll.cancel()  # the client closes its connection
    with contextlib.suppress(asyncio.CancelledError):
        await poll
    deadline = time.monotonic() + 5
    while blocked() > before:
        assert time.monotonic() < deadline, "the server kept waiting in Redis for a client that left"
        await asyncio.sleep(0.1)


# ---------------------------------------------------------------------------- addressable ids
@pytest.mark.parametrize("bad", ["order/7", "/", ".", ".."])
def test_an_id_no_url_could_address_is_refused_at_enqueue(http: httpx.Client, queue: str, bad: str) -> None:
    """``{"job_id": "order/7"}`` was accepted (201) and then could not be reached: the
    server splits ``order%2F7`` at the slash, and clients resolve ``.`` and ``..`` away, so
    GET, result, cancel and DELETE all answered 404. Such ids are refused at enqueue."""
    single = http.post(f"/v1/queues/{queue}/jobs", json={"task": "add", "job_id": bad})
    assert problem(single, 422)["field"] == "job_id"
    bulk = http.post(f"/v1/queues/{queue}/jobs/bulk", json={"jobs": [{"task": "add", "job_id": bad}]})
    assert problem(bulk, 422)["field"] == "jobs[0].job_id"
    tasks = Tasks(queue=queue)

    @tasks.task
    def add() -> None: ...

    with pytest.raises(ValueError, match="job id"):  # the Python face
        add.with_options(job_id=bad)
    with pytest.raises(ValueError, match="queue name"):
        add.with_options(queue=f"{queue}/{bad}" if "/" in bad else bad)  # and queue names
    problem(http.get(f"/v1/queues/{queue}"), 404)  # nothing was made


@pytest.mark.parametrize(
    "odd",
    ["order:7", "u@example.com", "a?b", "a#b", "a%2Fb", "100%", "café", "日本", "a\\b", "...", "a.b", "~x"],
)
def test_every_id_and_queue_name_accepted_is_addressable(http: httpx.Client, queue: str, odd: str) -> None:
    """What the rule still admits (anything printable but '/', braces and spaces) is reached
    by percent-encoding it as one path segment: GET, result, cancel and DELETE find it."""
    from urllib.parse import quote

    name = f"{queue}-{odd}"
    made = http.post(f"/v1/queues/{quote(name, safe='')}/jobs", json={"task": "t", "job_id": odd})
    assert made.status_code == 201, made.text
    base = f"/v1/queues/{quote(name, safe='')}"
    job = f"{base}/jobs/{quote(odd, safe='')}"
    assert http.get(base).json()["name"] == name
    assert http.get(job).json()["id"] == odd
    assert http.get(f"{job}/result", params={"timeout": 0}).json()["id"] == odd
    assert http.post(f"{job}/cancel").json() == {"id": odd, "state": "cancelled"}
    assert http.delete(job).json() == {"id": odd, "removed_from": "cancelled"}

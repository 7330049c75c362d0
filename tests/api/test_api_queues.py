"""Queue, schedule, worker and health endpoints over real HTTP."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conveyor import AsyncClient, Client, Tasks
from conveyor.ops.scripts import names

from api_helpers import ThreadedUvicorn, auth, problem, start_api
from helpers import running_worker, wait_until


@pytest.fixture(scope="module")
def api(server_url: str) -> Iterator[ThreadedUvicorn]:
    server = start_api(server_url)
    yield server
    server.stop()


def test_health_and_docs(http: httpx.Client) -> None:
    assert http.get("/healthz", headers={}).json() == {"status": "ok"}
    for _ in range(2):  # redis-py's asyncio cluster client routed SCRIPT EXISTS only the first time
        ready = http.get("/readyz", headers={}).json()
        names = {check["name"] for check in ready["checks"]}
        assert ready["status"] == "ready" and names >= {"redis", "eviction_policy"}
    spec = http.get("/openapi.json", headers={}).json()
    assert spec["openapi"].startswith("3.") and "/v1/queues/{queue}/jobs" in spec["paths"]
    assert "bearer" in str(spec["components"]["securitySchemes"]).lower()
    docs = http.get("/docs", headers={})
    assert docs.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in docs.text
    assert "http://" not in docs.text and "https://" not in docs.text, "no asset from the internet"
    script = http.get("/docs-assets/swagger-ui-bundle.js", headers={})
    assert script.status_code == 200 and len(script.content) > 100_000
    assert problem(http.get("/v2/nothing"), 404)["detail"].startswith("no endpoint")
    problem(http.patch("/v1/queues"), 405)


async def test_readyz_loads_the_scripts_again_after_a_flush(
    ahttp: httpx.AsyncClient, client: Client, aclient: AsyncClient, raw: Any
) -> None:
    """After a restart or SCRIPT FLUSH, the readiness probe loads the scripts again (on every
    primary of a cluster), through the client's ``load_scripts``, as each face does."""
    every = len(names())
    raw.script_flush()
    assert (await ahttp.get("/readyz", headers={})).json()["status"] == "ready"
    assert client.load_scripts() == 0
    raw.script_flush()
    assert client.load_scripts() == every and await aclient.load_scripts() == 0
    raw.script_flush()
    assert await aclient.load_scripts() == every and client.load_scripts() == 0


def test_readyz_without_redis() -> None:
    dead = start_api("redis://127.0.0.1:1/0")
    try:
        with httpx.Client(base_url=dead.base_url, timeout=30) as c:
            body = problem(c.get("/readyz"), 503)
            assert "127.0.0.1:1" not in body["detail"] and "redis://" not in str(body)
            assert problem(c.get("/v1/queues", headers=auth()), 503)["detail"].startswith("Redis")
            assert c.get("/healthz").status_code == 200
    finally:
        dead.stop()


def test_queues_and_paging(http: httpx.Client, queue: str) -> None:
    problem(http.get(f"/v1/queues/{queue}"), 404)
    ids = [
        j["id"]
        for j in http.post(
            f"/v1/queues/{queue}/jobs/bulk", json={"jobs": [{"task": "t", "args": [i]} for i in range(25)]}
        ).json()["jobs"]
    ]
    http.post(f"/v1/queues/{queue}/jobs", json={"task": "t", "delay": 600})
    listed = {q["name"]: q for q in http.get("/v1/queues").json()["queues"]}
    assert listed[queue]["counts"]["waiting"] == 25 and listed[queue]["counts"]["delayed"] == 1
    one = http.get(f"/v1/queues/{queue}").json()
    assert one["name"] == queue and one["paused"] is False and one["schedules"] == 0
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"state": "waiting", "limit": 10}
        if cursor:
            params["cursor"] = cursor
        page = http.get(f"/v1/queues/{queue}/jobs", params=params).json()
        assert page["total"] == 25
        seen += [j["id"] for j in page["jobs"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and seen == ids  # run order: oldest first
    delayed = http.get(f"/v1/queues/{queue}/jobs", params={"state": "delayed"}).json()
    assert delayed["total"] == 1 and delayed["next_cursor"] is None
    assert problem(http.get(f"/v1/queues/{queue}/jobs", params={"cursor": "!!"}), 400)["field"] == "cursor"
    assert problem(http.get(f"/v1/queues/{queue}/jobs", params={"state": "nope"}), 422)["field"] == "state"
    assert problem(http.get(f"/v1/queues/{queue}/jobs", params={"limit": 0}), 422)["field"] == "limit"


def test_pause_resume_purge(http: httpx.Client, queue: str, client: Client) -> None:
    http.post(f"/v1/queues/{queue}/jobs/bulk", json={"jobs": [{"task": "t"}] * 5})
    http.post(f"/v1/queues/{queue}/jobs", json={"task": "t", "delay": 600})
    assert http.post(f"/v1/queues/{queue}/pause").json() == {"queue": queue, "paused": True}
    assert http.get(f"/v1/queues/{queue}").json()["paused"] is True
    assert client.settings_of(queue).get("paused") == 1
    assert http.post(f"/v1/queues/{queue}/resume").json() == {"queue": queue, "paused": False}
    assert http.get(f"/v1/queues/{queue}").json()["paused"] is False
    purged = http.post(f"/v1/queues/{queue}/purge", json={"states": ["delayed"]})
    assert purged.json() == {"queue": queue, "deleted": 1}
    assert http.post(f"/v1/queues/{queue}/purge").json()["deleted"] == 5
    assert problem(http.post(f"/v1/queues/{queue}/purge", json={"states": ["active"]}), 422)[
        "field"
    ].startswith("states")


def test_schedules_crud(http: httpx.Client, queue: str) -> None:
    base = f"/v1/queues/{queue}/schedules"
    created = http.post(
        base, json={"name": "nightly", "task": "cleanup", "cron": "0 3 * * *", "timezone": "Europe/Berlin"}
    )
    assert created.status_code == 201
    assert created.json()["cron"] == "0 3 * * *" and created.json()["next_run"]
    assert problem(http.post(base, json={"name": "nightly", "task": "x", "every": 5}), 409)["field"] == "name"
    replaced = http.put(f"{base}/nightly", json={"task": "cleanup", "every": 300, "args": [1]})
    assert replaced.status_code == 200 and replaced.json()["every"] == 300 and replaced.json()["cron"] is None
    new = http.put(f"{base}/hourly", json={"task": "ping", "every": 3600})
    assert new.status_code == 201
    hook = http.put(
        f"{base}/hook",
        json={
            "task": "conveyor.http",
            "every": 60,
            "kwargs": {"url": "https://example.com/x", "method": "POST"},
        },
    )
    assert hook.status_code == 201
    names = [s["name"] for s in http.get(base).json()["schedules"]]
    assert names == ["hook", "hourly", "nightly"]
    assert http.get(f"{base}/nightly").json()["args"] == [1]
    assert http.get(f"/v1/queues/{queue}").json()["schedules"] == 3
    assert http.delete(f"{base}/hourly").status_code == 204
    problem(http.delete(f"{base}/hourly"), 404)
    problem(http.get(f"{base}/hourly"), 404)
    assert problem(http.put(f"{base}/bad", json={"task": "t", "cron": "every day"}), 422)["field"] == "cron"
    assert problem(http.put(f"{base}/bad", json={"task": "t"}), 422)["detail"].startswith("a schedule needs")
    assert (
        problem(http.put(f"{base}/bad", json={"task": "t", "every": 1, "timezone": "Mars/Base"}), 422)[
            "field"
        ]
        == "timezone"
    )
    bad_hook = http.put(
        f"{base}/bad", json={"task": "conveyor.http", "every": 60, "kwargs": {"url": "ftp://x"}}
    )
    assert problem(bad_hook, 422)["detail"].startswith("kwargs.url")


async def test_workers_listed(ahttp: httpx.AsyncClient, queue: str, url: str) -> None:
    tasks = Tasks(queue=queue)

    @tasks.task
    def noop() -> None: ...

    async with running_worker(tasks, url):

        async def listed() -> bool:
            workers = (await ahttp.get("/v1/workers")).json()["workers"]
            return any(queue in w.get("queues", "") for w in workers)

        await wait_until(listed)


# ---------------------------------------------------------------------------- API odds (issue 14)
@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/v1/queues/q/jobs", "GET, POST"),
        ("PUT", "/v1/queues/q/jobs/x", "DELETE, GET"),
        ("POST", "/v1/queues/q/schedules/n", "DELETE, GET, PUT"),
        ("DELETE", "/v1/queues/q/schedules", "GET, POST"),
        ("GET", "/v1/queues/q/jobs/x/cancel", "POST"),
        ("PATCH", "/v1/queues", "GET"),
        ("POST", "/healthz", "GET"),
    ],
)
def test_405_allow_names_every_method_of_the_path(
    http: httpx.Client, method: str, path: str, allowed: str
) -> None:
    """Starlette's Allow named the methods of the first route whose path matched: DELETE on
    /jobs said only POST was allowed, though GET lists the jobs."""
    answer = http.request(method, path)
    problem(answer, 405)
    assert answer.headers["allow"] == allowed
    assert allowed in answer.json()["detail"]


def test_every_body_must_be_json(http: httpx.Client, queue: str) -> None:
    """The single enqueue parsed its body whatever the Content-Type said, while the bulk one
    refused; now every endpoint that reads a body answers 415 to one that is not JSON."""
    job = json.dumps({"task": "t"}).encode()
    jobs = json.dumps({"jobs": [{"task": "t"}]}).encode()
    for path, body in ((f"/v1/queues/{queue}/jobs", job), (f"/v1/queues/{queue}/jobs/bulk", jobs)):
        for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
            headers = {"Content-Type": content_type} if content_type else {}
            refused = http.post(path, content=body, headers=headers)
            assert problem(refused, 415)["field"] == "Content-Type", (path, content_type)
        for content_type in ("application/json", "application/json; charset=utf-8", "application/vnd.x+json"):
            made = http.post(path, content=body, headers={"Content-Type": content_type})
            assert made.status_code == 201, (path, content_type, made.text)
    assert http.get(f"/v1/queues/{queue}").json()["counts"]["waiting"] == 6
    reason = json.dumps({"reason": "no"}).encode()
    cancel = http.post(
        f"/v1/queues/{queue}/jobs/x/cancel", content=reason, headers={"Content-Type": "text/plain"}
    )
    problem(cancel, 415)
    spec = http.get("/openapi.json").json()
    for path, operation in (("/v1/queues/{queue}/jobs", "post"), ("/v1/queues/{queue}/purge", "post")):
        assert "415" in spec["paths"][path][operation]["responses"]
    assert "415" not in spec["paths"]["/v1/queues/{queue}/pause"]["post"]["responses"]


def test_a_queue_exists_in_one_sense_on_every_endpoint(
    http: httpx.Client, queue: str, client: Client, raw: Any
) -> None:
    """GET on an unknown queue answered 404 while listing its jobs, pausing, resuming,
    purging it or listing its schedules answered 200 (and pausing made a setting). A queue
    exists once registered (an enqueue, or a schedule made over the API) or while it holds
    anything; every endpoint answers 404 otherwise."""
    base = f"/v1/queues/{queue}"
    unknown = [
        ("GET", f"{base}/jobs"),
        ("GET", f"{base}/jobs?state=failed"),
        ("POST", f"{base}/pause"),
        ("POST", f"{base}/resume"),
        ("POST", f"{base}/purge"),
        ("GET", f"{base}/schedules"),
        ("GET", base),
    ]
    for method, path in unknown:
        assert problem(http.request(method, path), 404)["field"] == "queue", (method, path)
    assert client.settings_of(queue) == {}, "a refused pause wrote nothing"
    assert queue not in [q["name"] for q in http.get("/v1/queues").json()["queues"]]
    assert http.post(f"{base}/jobs", json={"task": "t"}).status_code == 201
    for method, path in unknown:
        assert http.request(method, path).status_code == 200, (method, path)
    assert queue in [q["name"] for q in http.get("/v1/queues").json()["queues"]]

    scheduled = f"{queue}-s"
    made = http.put(f"/v1/queues/{scheduled}/schedules/hourly", json={"task": "t", "every": 3600})
    assert made.status_code == 201
    assert http.get(f"/v1/queues/{scheduled}/jobs").json()["total"] == 0  # exists, though empty
    assert scheduled in [q["name"] for q in http.get("/v1/queues").json()["queues"]]

    legacy = f"{queue}/legacy"  # registered before '/' was refused: left out, not a 500
    raw.sadd("cv:queues", legacy)
    try:
        listed = http.get("/v1/queues")
        assert listed.status_code == 200, listed.text
        assert legacy not in [q["name"] for q in listed.json()["queues"]]
    finally:
        raw.srem("cv:queues", legacy)

    paused = f"{queue}-p"  # paused by the Python client, which registers nothing
    client.pause(paused)
    assert http.get(f"/v1/queues/{paused}").json()["paused"] is True
    assert http.post(f"/v1/queues/{paused}/resume").json() == {"queue": paused, "paused": False}


def test_the_document_refuses_what_the_server_refuses(http: httpx.Client, queue: str) -> None:
    """Generated clients follow the OpenAPI document: its path patterns admitted control
    characters the server refuses, and it did not say that cron and every exclude each
    other, nor delay and run_at. Each body here is judged alike by both."""
    import jsonschema_rs

    spec = http.get("/openapi.json", headers={}).json()
    operation = spec["paths"]["/v1/queues/{queue}/jobs/{job_id}"]["get"]
    patterns = {p["name"]: re.compile(p["schema"]["pattern"]) for p in operation["parameters"]}
    for name in ("queue", "job_id"):
        for bad in ("a/b", ".", "..", "a b", "a\x01b", "a\x7fb", "a\u200bb", "a\u2028b", "{a}", ""):
            assert not patterns[name].search(bad), (name, bad)
        for good in ("order:7", "café", "a.b", "...", "u@x", "100%"):
            assert patterns[name].search(good), (name, good)

    def schema(name: str) -> jsonschema_rs.Draft202012Validator:
        return jsonschema_rs.Draft202012Validator(spec["components"]["schemas"][name])

    enqueue = jsonschema_rs.Draft202012Validator(
        spec["paths"]["/v1/queues/{queue}/jobs"]["post"]["requestBody"]["content"]["application/json"][
            "schema"
        ]
    )
    bodies: list[tuple[dict[str, Any], bool]] = [
        ({"task": "t", "delay": 5, "run_at": "2030-01-01T00:00:00Z"}, False),
        ({"task": "t", "delay": None, "run_at": "2030-01-01T00:00:00Z"}, True),
        ({"task": "t", "debounce": True, "dedup": "k"}, False),
        ({"task": "t", "debounce": True, "dedup": "k", "dedup_window": 5}, True),
        ({"task": "t", "job_id": "a/b"}, False),
        ({"task": "t", "dedup": "a\x00b"}, False),
    ]
    for body, valid in bodies:
        assert enqueue.is_valid(body) is valid and schema("EnqueueRequest").is_valid(body) is valid, body
        answer = http.post(f"/v1/queues/{queue}/jobs", json=body)
        assert (answer.status_code == 201) is valid, (body, answer.text)
    schedules: list[tuple[dict[str, Any], bool]] = [
        ({"task": "t", "cron": "0 3 * * *", "every": 60}, False),
        ({"task": "t"}, False),
        ({"task": "t", "cron": None, "every": None}, False),
        ({"task": "t", "cron": "0 3 * * *", "every": None}, True),
        ({"task": "t", "every": 60}, True),
    ]
    for number, (body, valid) in enumerate(schedules):
        assert schema("ScheduleIn").is_valid(body) is valid, body
        answer = http.put(f"/v1/queues/{queue}/schedules/s{number}", json=body)
        assert (answer.status_code == 201) is valid, (body, answer.text)
        created = http.post(f"/v1/queues/{queue}/schedules", json={**body, "name": f"c{number}"})
        assert schema("ScheduleCreate").is_valid({**body, "name": "x"}) is valid, body
        assert (created.status_code == 201) is valid, (body, created.text)
    assert not schema("ScheduleCreate").is_valid({"task": "t", "every": 60, "name": "a/b"})
    dots = http.post(f"/v1/queues/{queue}/schedules", json={"task": "t", "every": 60, "name": ".."})
    assert problem(dots, 422)["field"] == "name"

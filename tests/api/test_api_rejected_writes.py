"""An enqueue the API refuses writes nothing: the queue is not listed afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from api_helpers import ThreadedUvicorn, problem, start_api


@pytest.fixture(scope="module")
def api(server_url: str) -> Iterator[ThreadedUvicorn]:
    server = start_api(server_url, max_payload_bytes=1_000)
    yield server
    server.stop()


def _listed(http: httpx.Client) -> set[str]:
    return {q["name"] for q in http.get("/v1/queues").json()["queues"]}


def test_a_refused_first_enqueue_leaves_the_queue_unlisted(http: httpx.Client, queue: str) -> None:
    too_big = {"task": "add", "args": ["x" * 5_000]}
    assert problem(http.post(f"/v1/queues/{queue}/jobs", json=too_big), 413)["field"] == "args"
    assert queue not in _listed(http)
    bulk = {"jobs": [{"task": "add", "args": [1]}, too_big]}
    assert http.post(f"/v1/queues/{queue}/jobs/bulk", json=bulk).status_code == 413
    assert queue not in _listed(http)
    assert http.get(f"/v1/queues/{queue}").status_code == 404
    assert http.post(f"/v1/queues/{queue}/jobs", json={"task": "add", "args": [1]}).status_code == 201
    assert queue in _listed(http)

"""The history endpoints (``/v1/history/...``) over real HTTP, against a real SQLite store file
filled through ``store.write``, and the search path against the private PostgreSQL too."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from conveyor.api import ApiSettings
from conveyor.errors import ConfigurationError
from conveyor.history import AttemptRecord, JobRecord
from conveyor.ops import history as handoff

from api_helpers import ThreadedUvicorn, auth, problem, start_api
from helpers import stored_history

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
COUNT = 40
ROOT = Path(__file__).resolve().parents[2]


def make_records() -> list[JobRecord]:
    """Jobs finished 7 minutes apart, newest (``job-00``) first: every fifth is failed after a
    retry on worker ``w-retry``, the one after it cancelled; queues, tasks, groups and workers
    alternate so every filter has something to tell apart."""
    records = []
    for i in range(COUNT):
        finished = T0 - timedelta(minutes=7 * i)
        state = {2: "failed", 3: "cancelled"}.get(i % 5, "completed")
        failed = state == "failed"
        attempts = (
            (
                AttemptRecord(1, "retried", worker="w-retry", started_at=finished - timedelta(seconds=9)),
                AttemptRecord(2, "failed", worker=f"w-{i % 4}", started_at=finished - timedelta(seconds=2)),
            )
            if failed
            else (AttemptRecord(1, state if state == "completed" else "aborted", worker=f"w-{i % 4}"),)
        )
        records.append(
            JobRecord(
                queue=("emails", "reports")[i % 2],
                id=f"job-{i:02d}",
                task=("app.send", "app.report")[i % 2],
                state=state,
                finished_at=finished,
                attempts=len(attempts),
                arguments=json.dumps([[f"user-{i}@example.com"], {}]),
                result='{"sent": true}' if state == "completed" else None,
                error_type="SMTPError" if failed else None,
                error_message=f"mailbox full for user-{i}" if failed else None,
                traceback="Traceback (most recent call last):\nSMTPError: mailbox full" if failed else None,
                group=f"tenant-{i % 3}",
                enqueued_at=finished - timedelta(seconds=10),
                started_at=finished - timedelta(seconds=2),
                worker=f"w-{i % 4}",
                attempt_log=attempts,
            )
        )
    return records


RECORDS = make_records()


def fill(url: str, records: list[JobRecord] = RECORDS) -> str:
    return stored_history(url, records)


@pytest.fixture(scope="module")
def history_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return fill(f"sqlite:///{tmp_path_factory.mktemp('history')}/history.db")


@pytest.fixture(scope="module")
def api(server_url: str, history_url: str) -> Iterator[ThreadedUvicorn]:
    # Not archiving: the store holds exactly the records written above.
    server = start_api(server_url, history_url=history_url, archive=False)
    yield server
    server.stop()


def ids(page: dict[str, Any]) -> list[str]:
    return [item["id"] for item in page["items"]]


def expected(**match: Any) -> list[str]:
    return [r.id for r in RECORDS if all(check(r) for check in match.values())]


def search(http: httpx.Client, **params: Any) -> dict[str, Any]:
    response = http.get("/v1/history/jobs", params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_search_filters(http: httpx.Client) -> None:
    everything = search(http, limit=1000)
    assert ids(everything) == [r.id for r in RECORDS] and everything["next_cursor"] is None
    first = everything["items"][0]
    assert first["finished_at"] == T0.isoformat() and first["state"] == "completed"
    assert first["arguments"] == '[["user-0@example.com"], {}]' and "attempt_log" not in first
    assert first["wait_ms"] == 8000 and first["run_ms"] == 2000 and first["truncated"] == []

    assert ids(search(http, queue="emails", limit=1000)) == expected(q=lambda r: r.queue == "emails")
    assert ids(search(http, task="app.report", limit=1000)) == expected(t=lambda r: r.task == "app.report")
    both = search(http, state=["failed", "cancelled"], limit=1000)
    assert ids(both) == expected(s=lambda r: r.state in ("failed", "cancelled")) and len(ids(both)) == 16
    window = search(http, since=(T0 - timedelta(hours=1)).isoformat(), until="2026-03-10T11:50:00Z")
    assert ids(window) == expected(
        a=lambda r: r.finished_at >= T0 - timedelta(hours=1),
        b=lambda r: r.finished_at < T0 - timedelta(minutes=10),
    )
    # A time without a zone is UTC, as everywhere in Conveyor.
    assert ids(search(http, since="2026-03-10T11:55:00")) == ["job-00"]
    assert ids(search(http, group="tenant-1", limit=1000)) == expected(g=lambda r: r.group == "tenant-1")
    # A worker matches any attempt: w-retry ran only first attempts, of the failed jobs.
    assert ids(search(http, worker="w-retry", limit=1000)) == expected(f=lambda r: r.state == "failed")
    assert ids(search(http, text="user-12")) == ["job-12"]  # in the error message and the arguments
    assert ids(search(http, text="MAILBOX FULL", limit=1000)) == expected(f=lambda r: r.state == "failed")
    assert ids(search(http, id="job-07")) == ["job-07"]
    combined = search(http, queue="reports", state="failed", group="tenant-0", limit=1000)
    assert ids(combined) == expected(
        q=lambda r: r.queue == "reports", s=lambda r: r.state == "failed", g=lambda r: r.group == "tenant-0"
    )
    assert search(http, queue="nowhere")["items"] == []


def test_pages_follow_the_cursor_without_repeats(http: httpx.Client) -> None:
    for filters, want in (
        ({}, [r.id for r in RECORDS]),
        ({"state": "completed"}, expected(s=lambda r: r.state == "completed")),
    ):
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            page = search(http, limit=7, **filters, **({"cursor": cursor} if cursor else {}))
            assert len(page["items"]) <= 7
            seen += ids(page)
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == want and len(set(seen)) == len(seen)
        assert pages == -(-len(want) // 7) and pages >= 4


def test_one_job_with_its_attempts(http: httpx.Client) -> None:
    failed = http.get("/v1/history/jobs/reports/job-07")  # 7 % 5 == 2: failed after a retry
    assert failed.status_code == 200, failed.text
    body = failed.json()
    assert body["state"] == "failed" and body["error_type"] == "SMTPError"
    assert body["error_message"] == "mailbox full for user-7" and "Traceback" in body["traceback"]
    assert [(a["attempt"], a["outcome"], a["worker"]) for a in body["attempt_log"]] == [
        (1, "retried", "w-retry"),
        (2, "failed", "w-3"),
    ]
    assert body["parent"] is None and body["group"] == "tenant-1"
    missing = problem(http.get("/v1/history/jobs/emails/job-07"), 404)  # job-07 is of reports
    assert "job-07" in missing["detail"] and "history" in missing["detail"]
    problem(http.get("/v1/history/jobs/emails/nothing-here"), 404)


def test_stats_per_bucket(http: httpx.Client) -> None:
    since, until = "2026-03-10T08:00:00Z", "2026-03-10T12:00:01Z"
    response = http.get("/v1/history/stats", params={"since": since, "until": until, "bucket": "hour"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["bucket"] == "hour" and body["since"].startswith("2026-03-10T08:00:00")
    rows = body["rows"]
    in_range = [r for r in RECORDS if datetime(2026, 3, 10, 8, tzinfo=UTC) <= r.finished_at]
    assert sum(row["total"] for row in rows) == len(in_range)
    assert [(row["start"], row["queue"]) for row in rows] == sorted(
        (row["start"], row["queue"]) for row in rows
    )
    for row in rows:
        assert set(row["counts"]) == {"completed", "failed", "cancelled", "expired", "removed"}
        assert set(row["wait_ms"]) == set(row["run_ms"]) == {"p50", "p90", "p95", "p99"}
        decided = row["counts"]["completed"] + row["counts"]["failed"]
        assert row["failure_rate"] == (row["counts"]["failed"] / decided if decided else None)
        if row["counts"]["completed"] + row["counts"]["failed"]:
            assert row["run_ms"]["p50"] == 2000
    queued = http.get("/v1/history/stats", params={"since": since, "until": until, "queue": "reports"}).json()
    assert {row["queue"] for row in queued["rows"]} == {"reports"}
    daily = http.get(
        "/v1/history/stats",
        params={"since": "2026-03-01T00:00:00Z", "until": "2026-03-11T00:00:00Z", "bucket": "day"},
    ).json()
    assert len(daily["rows"]) == 2 and sum(row["total"] for row in daily["rows"]) == COUNT
    # Defaults: the last 24 hours, by hour (these records are older: no rows).
    recent = http.get("/v1/history/stats").json()
    assert recent["bucket"] == "hour" and recent["rows"] == []
    span = datetime.fromisoformat(recent["until"]) - datetime.fromisoformat(recent["since"])
    assert span == timedelta(hours=24)


@pytest.mark.parametrize(
    ("path", "params", "status", "field"),
    [
        ("/v1/history/jobs", {"state": "waiting"}, 422, "state[0]"),
        ("/v1/history/jobs", {"limit": 0}, 422, "limit"),
        ("/v1/history/jobs", {"limit": 1001}, 422, "limit"),
        ("/v1/history/jobs", {"since": "yesterday"}, 422, "since"),
        (
            "/v1/history/jobs",
            {"since": "2026-03-10T12:00:00Z", "until": "2026-03-10T11:00:00Z"},
            422,
            "since",
        ),
        ("/v1/history/jobs", {"text": "x" * 201}, 422, "text"),
        ("/v1/history/jobs", {"text": "   "}, 422, "text"),
        ("/v1/history/jobs", {"cursor": "not-a-cursor"}, 400, "cursor"),
        ("/v1/history/jobs", {"cursor": "not a cursor"}, 422, "cursor"),
        ("/v1/history/jobs", {"task": "a\x00b"}, 422, "task"),
        ("/v1/history/stats", {"bucket": "week"}, 422, "bucket"),
        ("/v1/history/stats", {"bucket": "minute", "since": "2020-01-01T00:00:00Z"}, 422, "bucket"),
        ("/v1/history/stats", {"since": "0001-01-01T00:00:00+01:00"}, 422, "since"),
    ],
)
def test_bad_parameters_are_problems(
    http: httpx.Client, path: str, params: dict[str, Any], status: int, field: str
) -> None:
    body = problem(http.get(path, params=params), status)
    assert body["field"] == field, body


def test_a_cursor_belongs_to_its_filters(http: httpx.Client) -> None:
    cursor = search(http, limit=5, state="failed")["next_cursor"]
    assert cursor
    body = problem(http.get("/v1/history/jobs", params={"limit": 5, "cursor": cursor}), 400)
    assert "other filters" in body["detail"] and body["field"] == "cursor"
    assert search(http, limit=5, state="failed", cursor=cursor)["items"]


def test_the_read_scope_is_needed(api: ThreadedUvicorn) -> None:
    with httpx.Client(base_url=api.base_url, timeout=30) as anonymous:
        for path in ("/v1/history/jobs", "/v1/history/jobs/emails/job-00", "/v1/history/stats"):
            problem(anonymous.get(path), 401)
            problem(anonymous.get(path, headers=auth("enqueue")), 403)
            assert anonymous.get(path, headers=auth("read")).status_code == 200
            assert anonymous.get(path, headers=auth("admin")).status_code == 200


def test_without_a_history_url_the_endpoints_say_how_to_enable_them(server_url: str) -> None:
    server = start_api(server_url)
    try:
        with httpx.Client(base_url=server.base_url, headers=auth("read"), timeout=30) as http:
            for path in ("/v1/history/jobs", "/v1/history/jobs/emails/job-01", "/v1/history/stats"):
                body = problem(http.get(path), 404)
                assert body["type"].endswith("/history-disabled") and "CONVEYOR_HISTORY_URL" in body["detail"]
            problem(http.get("/v1/history/jobs", params={"limit": 0}), 422)  # the request is checked first
            assert http.get("/readyz").status_code == 200  # the rest of the API is not affected
    finally:
        server.stop()


def test_an_unreadable_store_is_a_503_and_is_tried_again(server_url: str, tmp_path: Path) -> None:
    blocker = tmp_path / "history"
    blocker.write_text("a file where the database's directory should be")
    server = start_api(server_url, history_url=f"sqlite:///{blocker}/history.db")
    try:
        with httpx.Client(base_url=server.base_url, headers=auth("read"), timeout=30) as http:
            body = problem(http.get("/v1/history/jobs"), 503)
            assert body["type"].endswith("/history-unavailable") and str(blocker) not in body["detail"]
            blocker.unlink()  # the next request opens the store (and creates its tables)
            assert http.get("/v1/history/jobs").json() == {"items": [], "next_cursor": None}
    finally:
        server.stop()


def test_history_url_setting() -> None:
    url = "sqlite:////tmp/h.db"
    assert ApiSettings.from_env({"CONVEYOR_HISTORY_URL": url}).history_url == url
    assert ApiSettings.from_env({}).history_url is None
    assert ApiSettings.from_env({"CONVEYOR_HISTORY_URL": url}, history_url="sqlite:///b.db").history_url == (
        "sqlite:///b.db"
    )
    with pytest.raises(ConfigurationError, match="CONVEYOR_HISTORY_URL"):
        ApiSettings.from_env({"CONVEYOR_HISTORY_URL": "mysql://secret@db/x"})


def test_the_cli_prints_what_the_api_answers(http: httpx.Client, history_url: str) -> None:
    """``conveyor history ... --json`` and the API share one JSON form of a record."""
    env = {**os.environ, "CONVEYOR_HISTORY_URL": history_url}
    shown = subprocess.run(
        [sys.executable, "-m", "conveyor", "history", "show", "reports", "job-07", "--json"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60, check=True,
    )  # fmt: skip
    assert json.loads(shown.stdout) == http.get("/v1/history/jobs/reports/job-07").json()


# ---------------------------------------------------------------- the OpenAPI document, fuzzed
@pytest.mark.timeout(300)
def test_generated_history_requests_conform(api: ThreadedUvicorn) -> None:
    """Schemathesis over the history operations alone, with a store that has records (the
    suite-wide run in test_api_schemathesis.py serves them without a history: 404)."""
    schema = schemathesis.openapi.from_url(f"{api.base_url}/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations() if r.ok().path.startswith("/v1/history")]
    assert len(operations) == 3
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    sent = itertools.count()
    with requests.Session() as session:
        for operation, mode in itertools.product(
            operations, (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        ):

            @seed(1)
            @given(case=operation.as_strategy(mode))
            @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            def run(case: schemathesis.Case) -> None:
                next(sent)
                case.call_and_validate(
                    base_url=api.base_url, session=session, headers=auth("read"), checks=checks, timeout=30
                )

            with contextlib.suppress(Unsatisfiable):
                run()
    assert next(sent) >= 250


# ---------------------------------------------------------------- PostgreSQL
@pytest.fixture(scope="module")
def pg_history_url() -> Iterator[str]:
    """A private PostgreSQL (tests/history's helper, a server of this module's own), filled."""
    from history.conftest import PostgresServer

    server = PostgresServer().start()
    try:
        yield fill(server.create_database("api_history"))
    finally:
        server.stop()


def test_search_and_read_on_postgres(server_url: str, pg_history_url: str) -> None:
    server = start_api(server_url, history_url=pg_history_url)
    try:
        with httpx.Client(base_url=server.base_url, headers=auth("read"), timeout=30) as http:
            seen: list[str] = []
            cursor = None
            while True:
                page = search(http, limit=9, **({"cursor": cursor} if cursor else {}))
                seen += ids(page)
                if (cursor := page["next_cursor"]) is None:
                    break
            assert seen == [r.id for r in RECORDS]
            assert ids(search(http, state="failed", worker="w-retry", limit=1000)) == expected(
                f=lambda r: r.state == "failed"
            )
            assert ids(search(http, text="user-12")) == ["job-12"]
            one = http.get("/v1/history/jobs/reports/job-07").json()
            assert [a["worker"] for a in one["attempt_log"]] == ["w-retry", "w-3"]
            problem(http.get("/v1/history/jobs/emails/job-07"), 404)
    finally:
        server.stop()


def test_the_api_archives_every_queue_it_serves(server_url: str, tmp_path: Path, queue: str) -> None:
    """With a history URL, the API process is an archiver too: jobs that finish on any queue,
    one created after it started included, show up in its history."""
    from conveyor import Client, Tasks, Worker

    server = start_api(server_url, history_url=f"sqlite:///{tmp_path / 'archived.db'}")
    try:
        tasks = Tasks(queue=queue)

        @tasks.task
        def double(n: int) -> int:
            return 2 * n

        with Client.from_url(server_url) as client:
            handle = client.enqueue(double, 21)  # the queue is new to the running archiver
            deadline = time.monotonic() + 30
            while not client.run(handoff.backlog(client.keys(queue))).enabled:
                assert time.monotonic() < deadline, "the API's archiver never turned history on"
                time.sleep(0.1)
        Worker(tasks, url=server_url, burst=True).run()
        with httpx.Client(base_url=server.base_url, headers=auth("read"), timeout=30) as http:
            deadline = time.monotonic() + 30
            while (response := http.get(f"/v1/history/jobs/{queue}/{handle.id}")).status_code == 404:
                assert time.monotonic() < deadline, response.text
                time.sleep(0.1)
        assert response.status_code == 200, response.text
        record = response.json()
        assert (record["state"], record["result"], record["attempts"]) == ("completed", "42", 1)
    finally:
        server.stop()

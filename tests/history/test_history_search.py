"""Search: every filter, text search, and keyset pagination."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from conveyor.history import AttemptRecord, FinalState, HistoryStore, JobRecord, SearchQuery
from conveyor.history.sql import Dialect, build_search

MakeJob = Callable[..., JobRecord]
T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def ids(records: list[JobRecord]) -> list[str]:
    return [r.id for r in records]


@pytest.fixture
async def populated(store: HistoryStore, make_job: MakeJob) -> HistoryStore:
    """Nine jobs, one a minute from T0 (j0 oldest), spread over filters."""
    jobs = [
        make_job("j0", queue="emails", task="app.send", group="tenant-1"),
        make_job(
            "j1", queue="emails", task="app.send", state="failed", error_message="SMTP 550 Mailbox full"
        ),
        make_job("j2", queue="emails", task="app.render", state="cancelled", worker=None, attempts=0),
        make_job("j3", queue="reports", task="app.build", group="tenant-1", arguments='[["Quarterly"], {}]'),
        make_job("j4", queue="reports", task="app.build", state="failed", error_message="KeyError: 'total'"),
        make_job("j5", queue="reports", task="app.build", state="expired", worker=None, attempts=0),
        make_job("j6", queue="emails", task="app.send", state="removed", group="tenant-2"),
        make_job(
            "j7",
            queue="emails",
            task="app.send",
            worker="w-2",
            attempts=2,
            attempt_log=(
                AttemptRecord(1, "lost", worker="w-crashed"),
                AttemptRecord(2, "completed", worker="w-2"),
            ),
        ),
        make_job("j8", queue="emails", task="app.send", arguments='[["100%_done"], {}]'),
    ]
    jobs = [
        JobRecord(
            **{
                **{f: getattr(j, f) for f in JobRecord.__dataclass_fields__},
                "finished_at": T0 + timedelta(minutes=i),
            }
        )
        for i, j in enumerate(jobs)
    ]
    await store.write(jobs)
    return store


async def search(store: HistoryStore, **filters: object) -> list[str]:
    return ids((await store.search(SearchQuery(**filters))).items)  # type: ignore[arg-type]


async def test_no_filter_lists_everything_newest_first(populated: HistoryStore) -> None:
    assert await search(populated) == [f"j{i}" for i in range(8, -1, -1)]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"id": "j4"}, ["j4"]),
        ({"queue": "reports"}, ["j5", "j4", "j3"]),
        ({"task": "app.send"}, ["j8", "j7", "j6", "j1", "j0"]),
        ({"task": "app.send", "queue": "reports"}, []),
        ({"states": ["failed"]}, ["j4", "j1"]),
        ({"states": {"cancelled", "expired", "removed"}}, ["j6", "j5", "j2"]),
        ({"states": FinalState.COMPLETED, "queue": "emails"}, ["j8", "j7", "j0"]),
        ({"group": "tenant-1"}, ["j3", "j0"]),
        ({"since": T0 + timedelta(minutes=3), "until": T0 + timedelta(minutes=6)}, ["j5", "j4", "j3"]),
        ({"since": T0 + timedelta(minutes=7)}, ["j8", "j7"]),
        ({"until": T0 + timedelta(minutes=1)}, ["j0"]),
        ({"task": "app.build", "since": T0 + timedelta(minutes=4)}, ["j5", "j4"]),
    ],
)
async def test_filters(populated: HistoryStore, filters: dict[str, object], expected: list[str]) -> None:
    assert await search(populated, **filters) == expected


async def test_worker_matches_any_attempt(populated: HistoryStore) -> None:
    # w-crashed ran only j7's first attempt; the job row names w-2, its last worker.
    assert await search(populated, worker="w-crashed") == ["j7"]
    assert await search(populated, worker="w-2") == ["j7"]
    assert await search(populated, worker="w-1", states=["failed"]) == ["j4", "j1"]
    assert await search(populated, worker="nobody") == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mailbox full", ["j1"]),  # in the error message, case-insensitive
        ("KeyError", ["j4"]),
        ("quarterly", ["j3"]),  # in the arguments
        ("100%_", ["j8"]),  # LIKE wildcards are taken literally
        ("0%", ["j8"]),  # shorter than a trigram
        ("_", ["j8"]),
        ("nowhere to be found", []),
    ],
)
async def test_text_search(populated: HistoryStore, text: str, expected: list[str]) -> None:
    assert await search(populated, text=text) == expected


async def test_text_search_combines_with_filters(populated: HistoryStore) -> None:
    assert await search(populated, text='"], {}', queue="reports") == ["j5", "j4", "j3"]  # in every args
    assert await search(populated, text="smtp", states=["completed"]) == []


async def test_a_job_that_never_ran_has_no_durations(populated: HistoryStore) -> None:
    got = await populated.get("emails", "j2")
    assert got is not None and got.attempts == 0 and got.attempt_log == ()


async def test_pages_neither_repeat_nor_skip_while_rows_arrive(
    store: HistoryStore, make_job: MakeJob
) -> None:
    originals = {f"o{i}": T0 + timedelta(seconds=10 * i) for i in range(40)}
    # Several rows share a finished_at: the keyset's tie-breaker must order them.
    originals.update({f"tie{i}": T0 + timedelta(seconds=100) for i in range(6)})
    await store.write([make_job(job_id, finished=at) for job_id, at in originals.items()])

    seen: list[str] = []
    last: datetime | None = None
    query = SearchQuery(task="app.work", limit=7)
    pages = 0
    while True:
        page = await store.search(query)
        pages += 1
        for r in page.items:
            assert last is None or r.finished_at <= last, "newest first"
            last = r.finished_at
        seen += ids(page.items)
        # Between pages, rows arrive: newer than all, older than all, and between seen ones.
        n = pages
        await store.write(
            [
                make_job(f"new{n}", finished=T0 + timedelta(days=1, seconds=n)),
                make_job(f"late{n}", finished=T0 - timedelta(days=1, seconds=n)),
                make_job(f"mid{n}", finished=T0 + timedelta(seconds=10 * (20 - n) + 5)),
                make_job(f"tie-new{n}", finished=T0 + timedelta(seconds=100)),
            ]
        )
        if page.next_cursor is None:
            break
        query = query.next_page(page.next_cursor)
    assert len(seen) == len(set(seen)), "a row came twice"
    assert set(originals) <= set(seen), f"rows skipped: {set(originals) - set(seen)}"
    assert not any(i.startswith("new") for i in seen), "a row newer than the first page came later"
    assert pages >= 7


async def test_the_last_page_has_no_cursor(store: HistoryStore, make_job: MakeJob) -> None:
    await store.write([make_job(f"j{i}", finished=T0 + timedelta(seconds=i)) for i in range(6)])
    first = await store.search(SearchQuery(limit=3))
    assert ids(first.items) == ["j5", "j4", "j3"] and first.next_cursor is not None
    second = await store.search(SearchQuery(limit=3, cursor=first.next_cursor))
    assert ids(second.items) == ["j2", "j1", "j0"] and second.next_cursor is None


async def test_a_cursor_only_serves_its_own_filters(store: HistoryStore, make_job: MakeJob) -> None:
    await store.write([make_job(f"j{i}", finished=T0 + timedelta(seconds=i)) for i in range(4)])
    page = await store.search(SearchQuery(queue="q", limit=2))
    assert page.next_cursor is not None
    with pytest.raises(ValueError, match="other filters"):
        SearchQuery(queue="other", limit=2, cursor=page.next_cursor)
    # The limit is not a filter: a client may change its page size.
    assert ids((await store.search(SearchQuery(queue="q", limit=5, cursor=page.next_cursor))).items) == [
        "j1",
        "j0",
    ]


async def test_text_search_is_served_by_its_index(
    populated: HistoryStore, store_url: str, backend: str
) -> None:
    query = SearchQuery(text="mailbox", queue="emails")
    if backend == "sqlite":
        dialect = Dialect("sqlite", "jobs", "attempts", "fts5", fts="jobs_fts")
        sql, params = build_search(query, dialect)
        path = store_url.removeprefix("sqlite:///")
        with contextlib.closing(sqlite3.connect(path)) as conn:
            plan = " ".join(str(row) for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
        assert "jobs_fts VIRTUAL TABLE INDEX" in plan, plan
    else:
        dialect = Dialect("postgres", "conveyor_history.jobs", "conveyor_history.attempts", "trigram")
        sql, params = build_search(SearchQuery(text="mailbox"), dialect)
        async with await psycopg.AsyncConnection.connect(store_url) as conn:
            # A few rows: the planner would rather scan them, or walk another index and filter.
            for kind in ("seqscan", "indexscan", "indexonlyscan"):
                await conn.execute(f"SET enable_{kind} = off")
            cur = await conn.execute(f"EXPLAIN {sql}", params)
            plan = "\n".join(str(row[0]) for row in await cur.fetchall())
        assert "Bitmap Index Scan on jobs_completed_p202603_error_message_idx" in plan, plan
        assert "arguments_idx" in plan, plan

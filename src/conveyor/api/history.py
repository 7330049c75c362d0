"""History endpoints: search finished jobs, read one with its attempts, and stats per bucket.

They read the history store (:mod:`conveyor.history`) that ``ApiService.history()`` opens on
first use, and need the ``read`` scope. Without ``CONVEYOR_HISTORY_URL`` they answer 404
``history-disabled`` (see :meth:`ApiService.history` for why not 503); a database that cannot
be reached answers 503 ``history-unavailable``.

The JSON of a record and of a stats row is the one ``conveyor history ... --json`` prints
(:func:`~conveyor.cli.history.record_json`), so a script can move between the two.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal, TypeVar

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from ..history import FinalState, HistoryStore, SearchQuery, StatsQuery

# The JSON forms live with the CLI, the face that is always installed: the API (an extra)
# may import the CLI's module, not the other way round.
from ..history.documents import check_cursor, database_errors, record_json, stats_row_json
from ..history.query import DEFAULT_PERCENTILES, MAX_LIMIT, MAX_TEXT
from . import models as m
from .problems import Problem, log, responses
from .routing import JobId, QueueName, json_response, scoped
from .service import ApiService

T = TypeVar("T")

NAME_LENGTH = 1024
"""Longest task, group or worker name a filter takes (the store keeps names up to 1 KiB)."""
CURSOR_PATTERN = r"^[A-Za-z0-9_-]{1,200}$"
STATS_DEFAULT_RANGE = timedelta(hours=24)

StateName = Literal["completed", "failed", "cancelled", "expired", "removed"]
OutcomeName = Literal["completed", "failed", "retried", "lost", "aborted"]
BucketName = Literal["minute", "hour", "day"]


# ---------------------------------------------------------------- response bodies
class HistoryAttempt(BaseModel):
    attempt: int = Field(description="1 for the first run.")
    outcome: OutcomeName = Field(
        description="retried: failed and run again; lost: its worker died or lost the lease; "
        "aborted: cancelled while it ran."
    )
    worker: str | None
    started_at: datetime | None
    finished_at: datetime | None
    error_type: str | None
    error_message: str | None


class JobRef(BaseModel):
    queue: str
    id: str


class HistoryJob(BaseModel):
    """A job that reached a final state, as the history keeps it. Text fields are cut to the
    store's caps when too long, and then named in ``truncated``."""

    queue: str
    id: str
    task: str
    state: StateName
    finished_at: datetime
    attempts: int = Field(description="How many times a worker started it (0: it never ran).")
    arguments: str | None = Field(description="The arguments as stored: JSON text.")
    result: str | None = Field(description="The result as JSON text, for completed jobs.")
    error_type: str | None
    error_message: str | None
    traceback: str | None
    priority: int
    group: str | None
    parent: JobRef | None = Field(description="The parent job, for a child in a flow.")
    flow: str | None
    schedule: str | None = Field(description="The schedule that enqueued it, for a repeatable job.")
    enqueued_at: datetime | None
    scheduled_for: datetime | None
    started_at: datetime | None = Field(description="When its last attempt started.")
    wait_ms: float | None = Field(description="From when it was due to its first start.")
    run_ms: float | None = Field(description="How long its last attempt ran.")
    worker: str | None = Field(description="The worker of its last attempt.")
    truncated: list[str] = Field(description="The fields cut to their cap when stored.")


class HistoryJobDetail(HistoryJob):
    attempt_log: list[HistoryAttempt] = Field(description="Every attempt, in order.")


class HistoryPage(BaseModel):
    items: list[HistoryJob] = Field(description="Newest first (by finished_at).")
    next_cursor: str | None = Field(
        description="Pass as cursor=, with the same filters, for the next page; null on the last."
    )


class Percentiles(BaseModel):
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None


class HistoryStatsRow(BaseModel):
    start: datetime = Field(description="The start of the bucket (UTC).")
    queue: str
    task: str
    counts: dict[str, int] = Field(description="Jobs that finished in the bucket, per final state.")
    total: int
    failure_rate: float | None = Field(
        description="failed / (completed + failed); null when neither happened."
    )
    wait_ms: Percentiles = Field(description="Milliseconds from due to first start.")
    run_ms: Percentiles = Field(description="Milliseconds the last attempt ran.")


class HistoryStats(BaseModel):
    since: datetime
    until: datetime
    bucket: BucketName
    rows: list[HistoryStatsRow] = Field(description="Ordered by start, queue, task; empty buckets left out.")


# ---------------------------------------------------------------- query parameters
Time = Annotated[
    datetime | None,
    Query(description="RFC 3339 time; one without a time zone is taken as UTC."),
]
Bucket = Annotated[BucketName, Query(description="The width of a bucket (aligned on UTC).")]
QueueFilter = Annotated[str | None, Query(pattern=m.NAME_PATTERN, description="Only this queue.")]
TaskFilter = Annotated[str | None, Query(min_length=1, max_length=NAME_LENGTH, description="Only this task.")]


def _invalid(exc: ValueError | OverflowError) -> Problem:
    """A query the history refuses, as a problem naming the parameter at fault."""
    message = str(exc)
    if isinstance(exc, OverflowError):
        return Problem(422, "since/until: a time out of range", code="invalid-request", field="since")
    if "cursor" in message:
        return Problem(
            400,
            f"cursor: {message}; pass next_cursor as it came, with the same filters",
            code="invalid-cursor",
            field="cursor",
        )
    # The query's messages start with the name at fault ("since must be before until"),
    # except the one on too many buckets.
    names = ("since", "until", "text", "queue", "task", "group", "worker", "id")
    field = "bucket" if "bucket" in message else next((n for n in names if message.startswith(n)), None)
    return Problem(422, message, code="invalid-request", field=field)


async def _on_store(service: ApiService, action: Callable[[HistoryStore], Awaitable[T]]) -> T:
    """Run ``action`` on the history store; a database that cannot be opened or read is a 503
    (its message goes to the log only: it may name hosts)."""
    try:
        return await action(await service.history())
    except database_errors() as exc:
        log.error("history database error: %s: %s", type(exc).__name__, exc)
        raise Problem(
            503,
            "the history database is unreachable or answered with an error; retry shortly",
            code="history-unavailable",
            headers={"Retry-After": "5"},
        ) from None


def add_history_routes(router: APIRouter, service: ApiService) -> None:
    """Add the history endpoints to ``router``."""

    @router.get(
        "/history/jobs",
        response_model=HistoryPage,
        openapi_extra=scoped("read"),
        responses=responses(404),
        summary="Search finished jobs, newest first, a page at a time",
        tags=["history"],
    )
    async def search_history(
        queue: QueueFilter = None,
        task: TaskFilter = None,
        state: Annotated[
            list[FinalState] | None, Query(description="Only these final states (repeat the parameter).")
        ] = None,
        since: Time = None,
        until: Time = None,
        group: Annotated[str | None, Query(min_length=1, max_length=NAME_LENGTH)] = None,
        worker: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=NAME_LENGTH,
                description="Only jobs any of whose attempts ran on this worker.",
            ),
        ] = None,
        text: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=MAX_TEXT,
                description="Searched in the error message and the arguments (a substring, case "
                "insensitive; whole words on PostgreSQL without pg_trgm).",
            ),
        ] = None,
        job_id: Annotated[
            str | None, Query(alias="id", pattern=m.ID_PATTERN, description="Only this job id.")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
        cursor: Annotated[
            str | None, Query(pattern=CURSOR_PATTERN, description="next_cursor of the previous page.")
        ] = None,
    ) -> Response:
        try:
            query = SearchQuery(
                id=job_id,
                queue=queue,
                task=task,
                states=state or None,
                since=since,
                until=until,
                group=group,
                worker=worker,
                text=text,
                cursor=cursor,
                limit=limit,
            )
            check_cursor(query)
        except (ValueError, OverflowError) as exc:
            raise _invalid(exc) from None
        page = await _on_store(service, lambda store: store.search(query))
        return json_response({"items": [record_json(r) for r in page.items], "next_cursor": page.next_cursor})

    @router.get(
        "/history/jobs/{queue}/{job_id}",
        response_model=HistoryJobDetail,
        openapi_extra=scoped("read"),
        responses=responses(404),
        summary="One finished job with every attempt (its latest record, if it finished twice)",
        tags=["history"],
    )
    async def get_history_job(queue: QueueName, job_id: JobId) -> Response:
        found = await _on_store(service, lambda store: store.get(queue, job_id))
        if found is None:
            raise Problem(
                404,
                f"no job {job_id!r} of queue {queue!r} in the history: it has not finished, is not "
                "archived yet, or is past its retention",
                code="not-found",
            )
        return json_response(record_json(found, with_attempts=True))

    @router.get(
        "/history/stats",
        response_model=HistoryStats,
        openapi_extra=scoped("read"),
        responses=responses(404),
        summary="Counts, failure rate, wait and run percentiles per time bucket, queue and task",
        tags=["history"],
    )
    async def history_stats(
        queue: QueueFilter = None,
        task: TaskFilter = None,
        since: Annotated[
            datetime | None, Query(description="RFC 3339 (UTC without a zone); default: until - 24 h.")
        ] = None,
        until: Annotated[
            datetime | None, Query(description="RFC 3339 (UTC without a zone); default: now.")
        ] = None,
        bucket: Bucket = "hour",
    ) -> Response:
        try:
            end = until if until is not None else datetime.now(UTC)
            query = StatsQuery(
                since=since if since is not None else end - STATS_DEFAULT_RANGE,
                until=end,
                bucket=bucket,
                queue=queue,
                task=task,
                percentiles=DEFAULT_PERCENTILES,
            )
        except (ValueError, OverflowError) as exc:
            raise _invalid(exc) from None
        rows = await _on_store(service, lambda store: store.stats(query))
        return json_response(
            {
                "since": query.since.isoformat(),
                "until": query.until.isoformat(),
                "bucket": query.bucket,
                "rows": [stats_row_json(row) for row in rows],
            }
        )

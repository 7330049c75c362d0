"""Request and response bodies of the API, as they appear in its OpenAPI document."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..task import MAX_PRIORITY

TEN_YEARS = 10 * 365 * 24 * 3600.0
ID_PATTERN = r"^[^{}\s]{1,256}$"
NAME_PATTERN = r"^[^{}\s]{1,200}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class EnqueueRequest(_Strict):
    """One job: the task a worker registered, its arguments, and options apart from them."""

    task: str = Field(min_length=1, max_length=200, description="Task name as registered by workers.")
    args: list[Any] = Field(default_factory=list, description="Positional arguments (JSON).")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments (JSON).")
    priority: int | None = Field(None, ge=-MAX_PRIORITY, le=MAX_PRIORITY, description="Higher runs first.")
    delay: float | None = Field(None, ge=0, le=TEN_YEARS, description="Seconds before the job may run.")
    run_at: datetime | None = Field(None, description="When the job may run (with a time zone).")
    job_id: str | None = Field(
        None, pattern=ID_PATTERN, description="Your own id: enqueueing an existing id creates nothing."
    )
    retries: int | None = Field(None, ge=0, le=1000, description="Overrides the task's retries.")
    timeout: float | None = Field(None, gt=0, le=TEN_YEARS, description="Overrides the task's timeout (s).")
    ttl: float | None = Field(None, ge=0, le=TEN_YEARS, description="Seconds the job may wait to start.")
    dedup: str | None = Field(None, min_length=1, max_length=512, pattern=r"^[^{}]*$")
    dedup_window: float | None = Field(None, ge=0, le=TEN_YEARS)
    debounce: bool = False


class Enqueued(BaseModel):
    id: str
    queue: str
    outcome: Literal["created", "existed", "duplicate"]
    created: bool
    replaced: str | None = None


class BulkRequest(_Strict):
    jobs: list[EnqueueRequest] = Field(min_length=1, max_length=10_000)


class BulkEnqueued(BaseModel):
    jobs: list[Enqueued]
    created: int


class JobOut(BaseModel):
    id: str
    queue: str
    task: str
    state: str = Field(description="waiting, delayed, active, completed, failed, cancelled, ...")
    args: list[Any]
    kwargs: dict[str, Any]
    priority: int
    attempts: int
    crashes: int
    options: dict[str, Any]
    created_at: str | None
    run_at: str | None
    started_at: str | None
    finished_at: str | None
    worker: str | None
    result: Any = None
    error: dict[str, Any] | None = None
    progress: Any = None
    group: str | None = None
    logs: list[str] = Field(default_factory=list, description="The job's last log lines, oldest first.")


class JobPage(BaseModel):
    jobs: list[JobOut]
    total: int = Field(description="Jobs in this state now.")
    next_cursor: str | None = Field(description="Pass as cursor= for the next page; null on the last.")


class WaitOut(BaseModel):
    id: str
    done: bool = Field(description="False when the wait ended before the job finished.")
    state: str = Field(description="waiting, delayed, active, completed, failed, cancelled, ...")
    result: Any = None
    error: dict[str, Any] | None = None


class CancelRequest(_Strict):
    reason: str = Field("cancelled over the API", max_length=1000)


class StateOut(BaseModel):
    id: str
    state: str = Field(description="The job's state after the operation (cancelled, aborting, waiting).")


class RemovedOut(BaseModel):
    id: str
    removed_from: str


class Limits(BaseModel):
    concurrency: int | None = None
    rate_max: int | None = None
    rate_ms: int | None = None


class QueueOut(BaseModel):
    name: str
    counts: dict[str, int]
    paused: bool
    limits: Limits
    schedules: int | None = None


class QueueList(BaseModel):
    queues: list[QueueOut]


PurgeState = Literal["waiting", "delayed", "completed", "failed", "cancelled"]


def _not_started() -> list[PurgeState]:
    return ["waiting", "delayed"]


class PurgeRequest(_Strict):
    states: list[PurgeState] = Field(default_factory=_not_started, min_length=1)


class PurgeOut(BaseModel):
    queue: str
    deleted: int


class PausedOut(BaseModel):
    queue: str
    paused: bool


class ScheduleIn(_Strict):
    """A repeatable job: exactly one of cron (with timezone) or every (seconds)."""

    task: str = Field(min_length=1, max_length=200)
    cron: str | None = Field(None, max_length=200, description="Five fields: minute hour day month weekday.")
    every: float | None = Field(None, ge=1, le=TEN_YEARS, description="Seconds between runs (1 or more).")
    timezone: str = Field("UTC", max_length=100)
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    missed: Literal["skip", "run_once"] = "skip"
    priority: int = Field(0, ge=-MAX_PRIORITY, le=MAX_PRIORITY)


class ScheduleCreate(ScheduleIn):
    name: str = Field(pattern=r"^[^{}@\s]{1,200}$")


class ScheduleOut(BaseModel):
    name: str
    queue: str
    task: str
    cron: str | None
    every: float | None
    timezone: str
    args: list[Any]
    kwargs: dict[str, Any]
    missed: str
    priority: int
    next_run: str | None


class ScheduleList(BaseModel):
    schedules: list[ScheduleOut]


class WorkerList(BaseModel):
    workers: list[dict[str, Any]]


class Health(BaseModel):
    status: str

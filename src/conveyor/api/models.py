"""Request and response bodies of the API, as they appear in its OpenAPI document."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..task import MAX_PRIORITY

TEN_YEARS = 10 * 365 * 24 * 3600.0

# What str.isprintable() refuses, as far as a regular expression shared by JSON Schema
# (ECMA 262), pydantic (Rust regex) and schemathesis (Python re) can spell it: control
# characters, Unicode spaces and format characters, private use. The server checks the
# rest (unassigned code points, surrogates) itself and answers the same 422.
_NOT_PRINTABLE = (
    r"\x00-\x1f\x7f-\xa0\xad\u1680\u180e\u2000-\u200f\u2028-\u202f\u205f-\u206f\u3000"
    r"\ue000-\uf8ff\ufeff\ufff9-\ufffb"
)


def _segment_pattern(longest: int, also: str = "") -> str:
    """A name that is one path segment, as validate_job_id and validate_queue_name check it:
    printable, no space, braces or '/' (nor the characters in ``also``), and not ``.`` or
    ``..`` (which URLs resolve away). Spelled without look-ahead, which Rust regex lacks."""
    allowed = f"[^{_NOT_PRINTABLE} {{}}/{also}]"
    no_dot = f"[^{_NOT_PRINTABLE} {{}}/{also}.]"
    return (
        f"^(?:{no_dot}{allowed}{{0,{longest - 1}}}"
        f"|\\.{no_dot}{allowed}{{0,{longest - 2}}}"
        f"|\\.\\.{allowed}{{1,{longest - 2}}})$"
    )


ID_PATTERN = _segment_pattern(256)
NAME_PATTERN = _segment_pattern(200)
SCHEDULE_NAME_PATTERN = _segment_pattern(200, "@")
DEDUP_PATTERN = f"^[^{_NOT_PRINTABLE}{{}}]{{1,512}}$"
SEGMENT_RULE = "printable, without spaces, braces or '/', and not '.' or '..'"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# Rules across fields, in the document so that generated clients and validators know them
# (the server checks the same ones and answers 422).
_ENQUEUE_RULES: dict[str, Any] = {
    "allOf": [
        {  # delay and run_at exclude each other
            "not": {
                "required": ["delay", "run_at"],
                "properties": {"delay": {"type": "number"}, "run_at": {"type": "string"}},
            }
        },
        {  # debounce needs dedup and dedup_window
            "anyOf": [
                {"properties": {"debounce": {"const": False}}},
                {
                    "required": ["dedup", "dedup_window"],
                    "properties": {"dedup": {"type": "string"}, "dedup_window": {"type": "number"}},
                },
            ]
        },
    ]
}


class EnqueueRequest(_Strict):
    """One job: the task a worker registered, its arguments, and options apart from them.
    ``delay`` and ``run_at`` exclude each other; ``debounce`` needs ``dedup`` and
    ``dedup_window``."""

    model_config = ConfigDict(json_schema_extra=_ENQUEUE_RULES)

    task: str = Field(min_length=1, max_length=200, description="Task name as registered by workers.")
    args: list[Any] = Field(default_factory=list, description="Positional arguments (JSON).")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments (JSON).")
    priority: int | None = Field(None, ge=-MAX_PRIORITY, le=MAX_PRIORITY, description="Higher runs first.")
    delay: float | None = Field(
        None, ge=0, le=TEN_YEARS, description="Seconds before the job may run. Not with run_at."
    )
    run_at: datetime | None = Field(
        None, description="When the job may run, with a time zone (RFC 3339). Not with delay."
    )
    job_id: str | None = Field(
        None,
        pattern=ID_PATTERN,
        description="Your own id: enqueueing an existing id creates nothing. 1 to 256 characters, "
        + SEGMENT_RULE
        + " (it appears in URLs).",
    )
    retries: int | None = Field(None, ge=0, le=1000, description="Overrides the task's retries.")
    timeout: float | None = Field(None, gt=0, le=TEN_YEARS, description="Overrides the task's timeout (s).")
    ttl: float | None = Field(None, ge=0, le=TEN_YEARS, description="Seconds the job may wait to start.")
    dedup: str | None = Field(
        None,
        min_length=1,
        max_length=512,
        pattern=DEDUP_PATTERN,
        description="Deduplication key: printable, without braces.",
    )
    dedup_window: float | None = Field(
        None, ge=0, le=TEN_YEARS, description="Seconds the dedup key holds after the job ends."
    )
    debounce: bool = Field(
        False, description="Replace the waiting job of the same dedup key; needs dedup and dedup_window."
    )


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

    # Exactly one of them, and null counts as absent (a client may send "every": null).
    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {"required": ["cron"], "properties": {"cron": {"type": "string"}}},
                {"required": ["every"], "properties": {"every": {"type": "number"}}},
            ]
        }
    )

    task: str = Field(min_length=1, max_length=200)
    cron: str | None = Field(
        None, max_length=200, description="Five fields: minute hour day month weekday. Not with every."
    )
    every: float | None = Field(
        None, ge=1, le=TEN_YEARS, description="Seconds between runs (1 or more). Not with cron."
    )
    timezone: str = Field("UTC", max_length=100)
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    missed: Literal["skip", "run_once"] = "skip"
    priority: int = Field(0, ge=-MAX_PRIORITY, le=MAX_PRIORITY)


class ScheduleCreate(ScheduleIn):
    name: str = Field(
        pattern=SCHEDULE_NAME_PATTERN, description=f"1 to 200 characters, {SEGMENT_RULE}, without '@'."
    )


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


class HealthCheck(BaseModel):
    name: str = Field(description="redis, memory, eviction_policy, persistence")
    status: Literal["ok", "warn", "fail"]
    message: str


class Readiness(BaseModel):
    """``/readyz`` once Redis answers: ready, with the verdicts on how Redis is set up.
    A failed check does not make the API unready (see ``create_app``)."""

    status: str = Field(description="ready")
    health: Literal["ok", "warn", "fail"] = Field(description="The worst status among the checks")
    checks: list[HealthCheck]

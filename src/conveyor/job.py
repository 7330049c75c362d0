"""Job: plain data describing one job, as read from Redis. No I/O here."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import serialization


class JobState(enum.StrEnum):
    """Where a job is. A job is in exactly one state at any moment."""

    WAITING = "waiting"
    """Ready to run; will be claimed by the next worker with a free slot."""
    DELAYED = "delayed"
    """Scheduled for later (``delay=``/``run_at=``, or waiting out a retry backoff)."""
    ACTIVE = "active"
    """Claimed by a worker that holds a lease on it."""
    COMPLETED = "completed"
    """Finished successfully; the result is kept for the retention period."""
    FAILED = "failed"
    """Dead-lettered: out of retries, or failed in a way retrying cannot fix."""
    CANCELLED = "cancelled"
    """Cancelled before it ran, or aborted while it ran; ``error`` says who and why."""
    WAITING_CHILDREN = "waiting_children"
    """The parent of a flow: it becomes waiting once all its children finished."""

    @property
    def is_terminal(self) -> bool:
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)


class EnqueueOutcome(enum.StrEnum):
    """What an enqueue did (``handle.outcome``); ``handle.id`` always names the job that stands."""

    CREATED = "created"
    """A new job was written. With ``debounce``, ``handle.replaced`` names the waiting job it
    replaced (that one is now cancelled)."""
    EXISTED = "existed"
    """A job with this id already existed; nothing was written and the existing job stands."""
    DUPLICATE = "duplicate"
    """The deduplication key matched an existing job (named by the handle); nothing was written."""


def _ms_to_datetime(value: str | bytes | None) -> datetime | None:
    if value is None or value in ("", b""):
        return None
    return datetime.fromtimestamp(int(value) / 1000, tz=UTC)


def _json(value: Any, default: Any, problems: list[str], name: str) -> Any:
    """Decode a JSON field; a malformed one is reported in ``problems`` instead of raising,
    so that a bad job can still be inspected (it is the job the worker dead-letters)."""
    if not value:
        return default
    try:
        return serialization.loads(value)
    except ValueError:
        problems.append(f"{name} is not valid JSON: {str(value)[:200]!r}")
        return default


def _parent_ref(value: str | None) -> tuple[str, str] | None:
    """A parent reference as stored in a child's hash: ``"<queue> <id>"`` (neither has spaces)."""
    if not value or " " not in value:
        return None
    queue, _, job_id = value.partition(" ")
    return queue, job_id


def _text(value: str | bytes | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True, slots=True)
class Job:
    """A snapshot of one job."""

    id: str
    queue: str
    task: str
    state: JobState
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    attempts: int = 0
    """How many times a worker has started this job."""
    crashes: int = 0
    """How many times a worker died (or lost its lease) while running this job."""
    deferrals: int = 0
    """How many times the job asked to come back later (``RetryAfter``), which spends no
    attempt; a task's ``max_deferrals`` caps it."""
    options: dict[str, Any] = field(default_factory=dict)
    """Options given at enqueue that override the task's defaults (retries, timeout, backoff)."""
    created_at: datetime | None = None
    run_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    worker: str | None = None
    token: int | None = None
    result: Any = None
    error: dict[str, Any] | None = None
    """For failed jobs and jobs waiting to retry: ``type``, ``message``, ``traceback``, ``reason``."""
    progress: Any = None
    """The last value the job reported with ``current_job().progress(...)``."""
    group: str | None = None
    """The group key the job was enqueued with (fairness and per-group limits)."""
    parent: tuple[str, str] | None = None
    """For a child in a flow: the (queue, id) of the job that waits for it."""
    children_pending: int = 0
    """For the parent of a flow: children that have not finished yet."""
    payload_problems: tuple[str, ...] = ()
    """Fields that could not be decoded (a job written by something other than Conveyor)."""

    @classmethod
    def from_hash(cls, queue: str, job_id: str, data: dict[Any, Any]) -> Job:
        """Build a job from the fields of its Redis hash, named in the one legend of them at
        the top of ``conveyor/ops/scripts/include/common.lua`` (the encoder that writes them
        is :mod:`conveyor.ops.encode`)."""
        d = {_text(k): v for k, v in data.items()}
        problems: list[str] = []
        token = d.get("tk")
        return cls(
            id=job_id,
            queue=queue,
            task=_text(d.get("n")) or "",
            state=JobState(_text(d.get("s")) or "waiting"),
            args=_json(d.get("a"), [], problems, "args"),
            kwargs=_json(d.get("k"), {}, problems, "kwargs"),
            priority=int(d.get("p") or 0),
            attempts=int(d.get("at") or 0),
            crashes=int(d.get("cr") or 0),
            deferrals=int(d.get("df") or 0),
            options=_json(d.get("o"), {}, problems, "options"),
            created_at=_ms_to_datetime(d.get("ct")),
            run_at=_ms_to_datetime(d.get("due")),
            started_at=_ms_to_datetime(d.get("st")),
            finished_at=_ms_to_datetime(d.get("ft")),
            worker=_text(d.get("w")),
            token=int(token) if token else None,
            result=_json(d.get("r"), None, problems, "result"),
            error=_json(d.get("e"), None, problems, "error"),
            progress=_json(d.get("pg"), None, problems, "progress"),
            group=_text(d.get("g")),
            parent=_parent_ref(_text(d.get("pa"))),
            children_pending=int(d.get("dp") or 0),
            payload_problems=tuple(problems),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view, as the CLI prints it and the HTTP API returns it."""

        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "id": self.id,
            "queue": self.queue,
            "task": self.task,
            "state": self.state.value,
            "args": self.args,
            "kwargs": self.kwargs,
            "priority": self.priority,
            "attempts": self.attempts,
            "crashes": self.crashes,
            "deferrals": self.deferrals,
            "options": self.options,
            "created_at": iso(self.created_at),
            "run_at": iso(self.run_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "worker": self.worker,
            "token": self.token,
            "result": self.result,
            "error": self.error,
            "progress": self.progress,
            "group": self.group,
            "parent": {"queue": self.parent[0], "id": self.parent[1]} if self.parent else None,
            "children_pending": self.children_pending,
        }

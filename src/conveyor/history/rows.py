"""Records to table rows and back, the same for both backends (only how a time is stored
differs: a ``datetime`` for PostgreSQL, microseconds since the epoch for SQLite). No I/O."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from .capping import clean
from .config import Limits
from .records import AttemptOutcome, AttemptRecord, FinalState, JobRecord, utc

JOB_COLUMNS = (
    "id",
    "queue",
    "attempts",
    "state",
    "finished_at",
    "task",
    "arguments",
    "result",
    "error_type",
    "error_message",
    "traceback",
    "truncated",
    "priority",
    "group_key",
    "parent_queue",
    "parent_id",
    "flow",
    "schedule",
    "enqueued_at",
    "scheduled_for",
    "started_at",
    "wait_ms",
    "run_ms",
    "worker",
)
"""The columns a job row is written with, in order (``seq`` is given by the database)."""
JOB_TIME_COLUMNS = frozenset({"finished_at", "enqueued_at", "scheduled_for", "started_at"})

ATTEMPT_COLUMNS = ("attempt", "outcome", "worker", "started_at", "finished_at", "error_type", "error_message")
"""An attempt's own columns; each backend adds the columns that tie it to its job row."""

TRUNCATION_BITS = {
    "arguments": 1,
    "result": 2,
    "error_message": 4,
    "traceback": 8,
    "error_type": 16,
    "queue": 32,
    "id": 64,
    "task": 128,
    "group": 256,
    "worker": 512,
    "schedule": 1024,
    "flow": 2048,
    "parent": 4096,
}
"""Which fields were cut, stored as one integer per row."""

# Priorities come from Redis as integers, but a bad one must not overflow a 32-bit column.
_INT32 = 2**31 - 1


class PreparedJob(NamedTuple):
    """A job ready to store: every text cleaned and capped, in :data:`JOB_COLUMNS` order."""

    values: tuple[Any, ...]
    attempts: tuple[tuple[Any, ...], ...]
    """One tuple per attempt, in :data:`ATTEMPT_COLUMNS` order."""

    @property
    def key(self) -> tuple[Any, ...]:
        """(id, queue, attempts, state, finished_at): what makes a write idempotent."""
        return self.values[:5]


class _Cleaner:
    __slots__ = ("bits", "limits")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.bits = 0

    def text(self, name: str, value: object, cap: int) -> str | None:
        # The common cases, without a call: none, or short ASCII text with no NUL (clean
        # does the rest). An archiver prepares some 20,000 jobs a second, 15 texts each.
        if value is None:
            return None
        if type(value) is str and len(value) <= cap and value.isascii() and "\x00" not in value:
            return value
        text, cut = clean(value, cap)
        if cut:
            self.bits |= TRUNCATION_BITS[name]
        return text

    def name(self, name: str, value: object) -> str | None:
        if value is None:
            return None
        return self.text(name, value, self.limits.name)


def _clamp(value: int) -> int:
    if type(value) is int and -_INT32 <= value <= _INT32:
        return value
    return max(-_INT32, min(_INT32, int(value)))


def prepare_job(record: JobRecord, limits: Limits) -> PreparedJob:
    c = _Cleaner(limits)
    parent_queue, parent_id = record.parent if record.parent is not None else (None, None)
    values = (
        c.name("id", record.id) or "",
        c.name("queue", record.queue) or "",
        _clamp(record.attempts),
        record.state.value,
        record.finished_at,
        c.name("task", record.task) or "",
        c.text("arguments", record.arguments, limits.arguments),
        c.text("result", record.result, limits.result),
        c.text("error_type", record.error_type, limits.error_type),
        c.text("error_message", record.error_message, limits.error_message),
        c.text("traceback", record.traceback, limits.traceback),
        0,  # the truncation bits, known once every field is cleaned
        _clamp(record.priority),
        c.name("group", record.group),
        c.name("parent", parent_queue),
        c.name("parent", parent_id),
        c.name("flow", record.flow),
        c.name("schedule", record.schedule),
        record.enqueued_at,
        record.scheduled_for,
        record.started_at,
        record.derived_wait_ms(),
        record.derived_run_ms(),
        c.name("worker", record.worker),
    )
    values = (*values[:11], c.bits, *values[12:])
    attempts = tuple(_prepare_attempt(a, limits) for a in record.attempt_log)
    return PreparedJob(values, attempts)


def _prepare_attempt(attempt: AttemptRecord, limits: Limits) -> tuple[Any, ...]:
    c = _Cleaner(limits)  # its truncation bits are not kept for attempts
    return (
        _clamp(attempt.attempt),
        attempt.outcome.value,
        c.name("worker", attempt.worker),
        utc(attempt.started_at) if attempt.started_at is not None else None,
        utc(attempt.finished_at) if attempt.finished_at is not None else None,
        c.text("error_type", attempt.error_type, limits.error_type),
        c.text("error_message", attempt.error_message, limits.error_message),
    )


def job_from_row(
    row: Sequence[Any],
    to_datetime: Callable[[Any], datetime],
    attempt_log: tuple[AttemptRecord, ...] = (),
) -> JobRecord:
    """A record from a row selected as :data:`JOB_COLUMNS` (extra columns after them are
    ignored); ``to_datetime`` reads the backend's stored times."""
    r = dict(zip(JOB_COLUMNS, row, strict=False))

    def when(name: str) -> datetime | None:
        value = r[name]
        return None if value is None else to_datetime(value)

    bits = r["truncated"] or 0
    parent = (r["parent_queue"], r["parent_id"]) if r["parent_id"] is not None else None
    return JobRecord(
        queue=r["queue"],
        id=r["id"],
        task=r["task"],
        state=FinalState(r["state"]),
        finished_at=to_datetime(r["finished_at"]),
        attempts=r["attempts"],
        arguments=r["arguments"],
        result=r["result"],
        error_type=r["error_type"],
        error_message=r["error_message"],
        traceback=r["traceback"],
        priority=r["priority"],
        group=r["group_key"],
        parent=parent,
        flow=r["flow"],
        schedule=r["schedule"],
        enqueued_at=when("enqueued_at"),
        scheduled_for=when("scheduled_for"),
        started_at=when("started_at"),
        wait_ms=r["wait_ms"],
        run_ms=r["run_ms"],
        worker=r["worker"],
        attempt_log=attempt_log,
        truncated=frozenset(name for name, bit in TRUNCATION_BITS.items() if bits & bit),
    )


def attempt_from_row(row: Sequence[Any], to_datetime: Callable[[Any], datetime]) -> AttemptRecord:
    """An attempt from a row selected as :data:`ATTEMPT_COLUMNS`."""
    attempt, outcome, worker, started, finished, error_type, message = row
    return AttemptRecord(
        attempt=attempt,
        outcome=AttemptOutcome(outcome),
        worker=worker,
        started_at=None if started is None else to_datetime(started),
        finished_at=None if finished is None else to_datetime(finished),
        error_type=error_type,
        error_message=message,
    )

"""The JSON forms of history records and stats rows, and what the CLI and the API both check
and catch: one shape for ``conveyor history ... --json`` and ``/v1/history``."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from .query import Cursor, SearchQuery, StatsRow, from_micros
from .records import AttemptRecord, FinalState, JobRecord

INT64 = 2**63


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def attempt_json(attempt: AttemptRecord) -> dict[str, Any]:
    return {
        "attempt": attempt.attempt,
        "outcome": attempt.outcome.value,
        "worker": attempt.worker,
        "started_at": iso(attempt.started_at),
        "finished_at": iso(attempt.finished_at),
        "error_type": attempt.error_type,
        "error_message": text_of(attempt.error_message),
    }


def record_json(record: JobRecord, *, with_attempts: bool = False) -> dict[str, Any]:
    """A record as JSON-ready data; ``with_attempts`` adds ``attempt_log`` (what ``get`` reads,
    where ``search`` leaves it empty)."""
    data: dict[str, Any] = {
        "queue": record.queue,
        "id": record.id,
        "task": record.task,
        "state": record.state.value,
        "finished_at": iso(record.finished_at),
        "attempts": record.attempts,
        "arguments": text_of(record.arguments),
        "result": text_of(record.result),
        "error_type": record.error_type,
        "error_message": text_of(record.error_message),
        "traceback": text_of(record.traceback),
        "priority": record.priority,
        "group": record.group,
        "parent": {"queue": record.parent[0], "id": record.parent[1]} if record.parent else None,
        "flow": record.flow,
        "schedule": record.schedule,
        "enqueued_at": iso(record.enqueued_at),
        "scheduled_for": iso(record.scheduled_for),
        "started_at": iso(record.started_at),
        "wait_ms": record.wait_ms,
        "run_ms": record.run_ms,
        "worker": record.worker,
        "truncated": sorted(record.truncated),
    }
    if with_attempts:
        data["attempt_log"] = [attempt_json(a) for a in record.attempt_log]
    return data


def percentile_key(fraction: float) -> str:
    """0.5 -> ``p50``, 0.999 -> ``p99.9``."""
    return f"p{fraction * 100:g}"


def stats_row_json(row: StatsRow) -> dict[str, Any]:
    return {
        "start": iso(row.start),
        "queue": row.queue,
        "task": row.task,
        "counts": {state.value: row.counts.get(state, 0) for state in FinalState},
        "total": row.total,
        "failure_rate": row.failure_rate,
        "wait_ms": {percentile_key(p): value for p, value in row.wait_ms.items()},
        "run_ms": {percentile_key(p): value for p, value in row.run_ms.items()},
    }


def text_of(value: str | bytes | None) -> str | None:
    # Records read back always hold str; bytes only reach a record the archiver is writing.
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return value


def check_cursor(query: SearchQuery) -> None:
    """Refuse a cursor that decodes but points nowhere a database can store (a hand-made one)."""
    position: Cursor | None = query.position()
    if position is None:
        return
    try:
        from_micros(position.finished_at_us)
    except OverflowError:
        raise ValueError("malformed cursor") from None
    if not -INT64 <= position.seq < INT64:
        raise ValueError("malformed cursor")


def database_errors() -> tuple[type[Exception], ...]:
    """What opening or reading a history database raises when the database (not the query) is
    at fault: SQLite's and psycopg's errors (a pool timeout among them), an OS error on the
    file, and the RuntimeError of a PostgreSQL URL without psycopg installed."""
    errors: list[type[Exception]] = [sqlite3.Error, OSError, RuntimeError]
    try:
        import psycopg

        errors.append(psycopg.Error)
    except ImportError:  # pragma: no cover - the PostgreSQL extra is not installed
        pass
    return tuple(errors)

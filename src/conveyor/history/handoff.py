"""From a hand-off entry (a finished job's fields, as ``scripts/include/history.lua`` copied
them out of Redis) to the :class:`JobRecord` the store keeps. Pure functions, no I/O.

Entries come from Redis, which anyone with access may have written to: every field is taken
as it is, and one that cannot be read (a time that is no number, an attempt log line that is
no JSON) is left out of the record rather than failing the batch it came in.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from .records import AttemptOutcome, AttemptRecord, FinalState, JobRecord

log = logging.getLogger("conveyor.history")


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromtimestamp(int(value) / 1000, tz=UTC)
    except (ValueError, OverflowError, OSError):
        return None


def _int(value: str | None, default: int = 0) -> int:
    try:
        return int(value) if value else default
    except ValueError:
        return default


def _error(text: str | None) -> dict[str, Any]:
    """The worker's error JSON (type, message, traceback, reason); unreadable text is kept
    as the message."""
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {"message": text}
    return data if isinstance(data, dict) else {"message": text}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _arguments(fields: Mapping[str, str]) -> str | None:
    args, kwargs = fields.get("a"), fields.get("k")
    if kwargs is None:
        return args
    # Both are JSON as the client stored them; joined as text, never decoded and encoded again.
    return '{"args": ' + (args or "[]") + ', "kwargs": ' + kwargs + "}"


def _logged_attempts(text: str | None) -> list[AttemptRecord]:
    attempts: list[AttemptRecord] = []
    for line in (text or "").split("\n"):
        if not line:
            continue
        try:
            data = json.loads(line)
            attempts.append(
                AttemptRecord(
                    attempt=int(data["n"]),
                    outcome=AttemptOutcome(data["o"]),
                    worker=_str(data.get("w")),
                    started_at=_time(str(data["s"])) if data.get("s") else None,
                    finished_at=_time(str(data["f"])) if data.get("f") else None,
                    error_type=_str(data.get("t")),
                    error_message=_str(data.get("m")),
                )
            )
        except (ValueError, KeyError, TypeError):
            log.warning("an attempt log line of a job could not be read; left out: %.200r", line)
    return attempts


def _last_outcome(state: FinalState, error: Mapping[str, Any]) -> AttemptOutcome:
    if state is FinalState.COMPLETED:
        return AttemptOutcome.COMPLETED
    if state is FinalState.CANCELLED:
        return AttemptOutcome.ABORTED
    if error.get("reason") == "worker_lost":
        return AttemptOutcome.LOST
    return AttemptOutcome.FAILED


def to_record(queue: str, fields: Mapping[str, str]) -> JobRecord:
    """The record of one finished job. Raises ``ValueError`` for an entry that names no job,
    no final state or no end time: such an entry was not written by Conveyor."""
    job_id = fields.get("id")
    finished_at = _time(fields.get("ft"))
    if not job_id or finished_at is None:
        raise ValueError("a hand-off entry needs the job's id and end time (fields id, ft)")
    state = FinalState(fields.get("s", ""))
    attempts = max(0, _int(fields.get("at")))
    error = _error(fields.get("e")) if state is not FinalState.COMPLETED else {}
    started_at = _time(fields.get("st"))
    worker = fields.get("w")

    log_ = _logged_attempts(fields["al"]) if "al" in fields else []
    logged = {attempt.attempt for attempt in log_}
    # The last attempt is told by the job's own fields, unless it ended before the job did
    # (a job cancelled or removed while it waited to run again was logged when it ended).
    if (
        attempts > 0
        and attempts not in logged
        and state
        in (
            FinalState.COMPLETED,
            FinalState.FAILED,
            FinalState.CANCELLED,
        )
    ):
        log_.append(
            AttemptRecord(
                attempt=attempts,
                outcome=_last_outcome(state, error),
                worker=worker,
                started_at=started_at,
                finished_at=finished_at,
                error_type=_str(error.get("type")),
                error_message=_str(error.get("message")),
            )
        )
    if len(log_) > 1:
        log_.sort(key=lambda attempt: attempt.attempt)
        # A number twice (an attempt retried by hand after the log was kept): the later one wins.
        log_ = list({attempt.attempt: attempt for attempt in log_}.values())

    parent = None
    if fields.get("pa"):
        parent_queue, _, parent_id = fields["pa"].partition(" ")
        parent = (parent_queue, parent_id) if parent_id else None
    enqueued_at = _time(fields.get("ct"))
    due = _time(fields.get("due"))
    return JobRecord(
        queue=queue,
        id=job_id,
        task=fields.get("n") or "",
        state=state,
        finished_at=finished_at,
        attempts=attempts,
        arguments=_arguments(fields),
        result=fields.get("r") if state is FinalState.COMPLETED else None,
        error_type=_str(error.get("type")),
        error_message=_str(error.get("message")),
        traceback=_str(error.get("traceback")),
        priority=_int(fields.get("p")),
        group=fields.get("g"),
        parent=parent,
        schedule=fields.get("sc"),
        enqueued_at=enqueued_at,
        scheduled_for=due if due is not None and (enqueued_at is None or due > enqueued_at) else None,
        started_at=started_at if attempts > 0 else None,
        worker=worker if attempts > 0 else None,
        attempt_log=tuple(log_),
    )

"""What the history store keeps: one :class:`JobRecord` per job that reached a final state,
with one :class:`AttemptRecord` per attempt. Plain data, no I/O.

A record handed to :meth:`HistoryStore.write` may carry anything the archiver found in Redis:
text fields accept ``bytes`` (decoded as UTF-8, invalid sequences kept as ``\\xNN``) and any
size (cut to the configured caps, see :mod:`conveyor.history.capping`). A record read back
has ``str`` fields and names the fields that were cut in ``truncated``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime

Text = str | bytes
"""A text field as the archiver may find it: bytes are decoded (never trusted to be UTF-8)."""


class FinalState(enum.StrEnum):
    """How a job ended. Only jobs in one of these states are recorded."""

    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    """Its time to live ran out before a worker took it."""
    REMOVED = "removed"
    """Removed by hand (``remove``/``purge``) before it finished."""


class AttemptOutcome(enum.StrEnum):
    """How one attempt ended."""

    COMPLETED = "completed"
    FAILED = "failed"
    """Failed, and the job was not tried again (out of retries, or not retryable)."""
    RETRIED = "retried"
    """Failed, and the job was put back to run again."""
    LOST = "lost"
    """The worker died or lost its lease while running it; ``worker`` names that worker."""
    ABORTED = "aborted"
    """Cancelled while it ran."""


def utc(value: datetime) -> datetime:
    """A datetime in UTC; a naive one is taken to be UTC already (Conveyor's clocks are)."""
    if value.tzinfo is UTC:  # the archiver's times are: nothing to convert (a hot path)
        return value
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One attempt of a job: who ran it, when, and how it ended."""

    attempt: int
    """1 for the first run."""
    outcome: AttemptOutcome
    worker: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error_type: str | None = None
    error_message: Text | None = None

    def __post_init__(self) -> None:
        if self.attempt < 1:
            raise ValueError(f"an attempt is numbered from 1, not {self.attempt}")
        if type(self.outcome) is not AttemptOutcome:  # an enum call costs a microsecond
            object.__setattr__(self, "outcome", AttemptOutcome(self.outcome))


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job that reached a final state.

    The store keys it on ``(queue, id, attempts)`` plus ``state`` and ``finished_at``: writing
    the same record again stores nothing, so an archiver may replay a batch after a crash.
    Those fields must therefore come from the job itself (as Redis holds it), never from the
    archiver's clock. A job that ends twice (failed, retried by hand, completed) is two
    records, told apart by ``attempts``.
    """

    queue: str
    id: str
    task: str
    state: FinalState
    finished_at: datetime
    attempts: int = 0
    """How many times a worker started it (0: it never ran)."""
    arguments: Text | None = None
    """The arguments as text: the JSON Conveyor stored, as the archiver chooses to join them."""
    result: Text | None = None
    """The result as text (JSON), for completed jobs."""
    error_type: str | None = None
    error_message: Text | None = None
    traceback: Text | None = None
    priority: int = 0
    group: str | None = None
    parent: tuple[str, str] | None = None
    """For a child in a flow: the (queue, id) of its parent."""
    flow: str | None = None
    """The id of the flow (its root job) the job belonged to, when known."""
    schedule: str | None = None
    """The schedule that enqueued it, for a repeatable job."""
    enqueued_at: datetime | None = None
    scheduled_for: datetime | None = None
    """When it was due (``run_at``/``delay``); waiting is counted from here when set."""
    started_at: datetime | None = None
    """When its last attempt started."""
    wait_ms: float | None = None
    """From due (``scheduled_for``, else ``enqueued_at``) to its first start (the first attempt's,
    else ``started_at``); derived when omitted."""
    run_ms: float | None = None
    """From ``started_at`` to ``finished_at``; derived when omitted."""
    worker: str | None = None
    """The worker of the last attempt (every attempt's is in ``attempt_log``)."""
    attempt_log: tuple[AttemptRecord, ...] = ()
    """Every attempt, in order. Records returned by ``search`` leave it empty; ``get`` fills it."""
    truncated: frozenset[str] = field(default=frozenset())
    """Set on records read back: the fields that were cut to their cap when stored."""

    def __post_init__(self) -> None:
        if type(self.state) is not FinalState:
            object.__setattr__(self, "state", FinalState(self.state))
        object.__setattr__(self, "finished_at", utc(self.finished_at))
        for name in ("enqueued_at", "scheduled_for", "started_at"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, utc(value))
        if self.attempts < 0:
            raise ValueError(f"attempts cannot be negative ({self.attempts})")
        object.__setattr__(self, "attempt_log", tuple(self.attempt_log))

    @property
    def due_at(self) -> datetime | None:
        return self.scheduled_for or self.enqueued_at

    def derived_wait_ms(self) -> float | None:
        if self.wait_ms is not None:
            return self.wait_ms
        due = self.due_at
        first_start = self.attempt_log[0].started_at if self.attempt_log else None
        start = utc(first_start) if first_start is not None else self.started_at
        if due is None or start is None:
            return None
        return max(0.0, (start - due).total_seconds() * 1000)

    def derived_run_ms(self) -> float | None:
        if self.run_ms is not None:
            return self.run_ms
        if self.started_at is None:
            return None
        return max(0.0, (self.finished_at - self.started_at).total_seconds() * 1000)

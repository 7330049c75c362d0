"""Settings of a history store: caps on stored text, retention per state, and tuning."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from .records import FinalState

KiB = 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """The most UTF-8 bytes stored of each text field; a longer one is cut, with a marker.

    The caps bound what one record costs the database and what text search indexes, so
    they are modest: the history is for finding and explaining jobs, not an archive of
    payloads.
    """

    arguments: int = 16 * KiB
    result: int = 16 * KiB
    error_message: int = 4 * KiB
    traceback: int = 64 * KiB
    error_type: int = 512
    name: int = 1 * KiB
    """Queue, id, task, group, worker, schedule and flow names."""

    def __post_init__(self) -> None:
        for name in ("arguments", "result", "error_message", "traceback", "error_type", "name"):
            if getattr(self, name) < 64:
                raise ValueError(f"the cap on {name} must be at least 64 bytes")


@dataclass(frozen=True, slots=True)
class Retention:
    """How long records are kept, by final state, counted from ``finished_at``.
    ``None`` keeps them forever."""

    completed: timedelta | None = timedelta(days=30)
    failed: timedelta | None = timedelta(days=90)
    cancelled: timedelta | None = timedelta(days=30)
    expired: timedelta | None = timedelta(days=30)
    removed: timedelta | None = timedelta(days=30)

    def __post_init__(self) -> None:
        for state in FinalState:
            value = self.for_state(state)
            if value is not None and value <= timedelta(0):
                raise ValueError(f"retention for {state} must be positive")

    def for_state(self, state: FinalState) -> timedelta | None:
        value: timedelta | None = getattr(self, state.value)
        return value


@dataclass(frozen=True, slots=True)
class HistoryConfig:
    limits: Limits = field(default_factory=Limits)
    retention: Retention = field(default_factory=Retention)
    migrate: bool = True
    """Run pending migrations when the store opens (else call ``migrate()``, or use
    ``conveyor history migrate``)."""
    prune_batch: int = 5000
    """Rows deleted per transaction when pruning by deletes, so no lock is held for long."""
    stats_sample_limit: int = 100_000
    """SQLite only: the most durations per (bucket, queue, task) a percentile is computed
    from; beyond it, from a uniform random sample of this size (seeded, so repeatable). Counts
    stay exact."""
    pool_min_size: int = 1
    pool_max_size: int = 4
    partitions_ahead: int = 2
    """PostgreSQL: months of partitions created ahead of the current one."""
    lock_timeout: timedelta = timedelta(seconds=2)
    """PostgreSQL: how long dropping a partition may wait for its lock before giving up until
    the next prune (so a prune never queues writers behind it for long)."""
    postgres_schema: str = "conveyor_history"
    text_search: Literal["auto", "fulltext"] = "auto"
    """PostgreSQL: ``auto`` uses trigram indexes (substring search) when the pg_trgm extension
    can be created, else full-text (word search); ``fulltext`` skips trying pg_trgm. Decided
    once, by the migration that creates the indexes."""

    def __post_init__(self) -> None:
        if self.prune_batch < 1 or self.stats_sample_limit < 1:
            raise ValueError("prune_batch and stats_sample_limit must be positive")
        if not 1 <= self.pool_min_size <= self.pool_max_size:
            raise ValueError("need 1 <= pool_min_size <= pool_max_size")
        if not 0 <= self.partitions_ahead <= 24:
            raise ValueError("partitions_ahead must be between 0 and 24")
        if not self.postgres_schema.isidentifier() or self.postgres_schema != self.postgres_schema.lower():
            raise ValueError("postgres_schema must be a lower-case identifier")

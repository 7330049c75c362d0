"""Durable, searchable history of finished jobs (issue 15): PostgreSQL or SQLite behind one
interface, :class:`HistoryStore`, opened by URL with :func:`open_store`.

The store does no Redis I/O: an archiver hands it :class:`JobRecord` batches
(``await store.write(batch)``); searches, stats and retention run against the database.
"""

from .config import HistoryConfig, Limits, Retention
from .query import Page, SearchQuery, StatsQuery, StatsRow
from .records import AttemptOutcome, AttemptRecord, FinalState, JobRecord
from .store import (
    DEFAULT_URL,
    ENV_URL,
    HistoryStore,
    MigrationResult,
    PruneResult,
    WriteResult,
    open_store,
    parse_url,
)

__all__ = [
    "DEFAULT_URL",
    "ENV_URL",
    "AttemptOutcome",
    "AttemptRecord",
    "FinalState",
    "HistoryConfig",
    "HistoryStore",
    "JobRecord",
    "Limits",
    "MigrationResult",
    "Page",
    "PruneResult",
    "Retention",
    "SearchQuery",
    "StatsQuery",
    "StatsRow",
    "WriteResult",
    "open_store",
    "parse_url",
]

"""The history store's one interface, and :func:`open_store`, which picks a backend by URL.

``CONVEYOR_HISTORY_URL`` (or the ``url`` argument) names the database:

- ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` (as SQLAlchemy spells it),
  ``sqlite:///:memory:``: the embedded default, stdlib sqlite3, no server needed.
- ``postgresql://user:password@host:port/db`` (also ``postgres://``): psycopg 3, pooled;
  install ``conveyor[history]``.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import ClassVar, Literal
from urllib.parse import unquote, urlsplit

from .config import HistoryConfig
from .query import Page, SearchQuery, StatsQuery, StatsRow
from .records import FinalState, JobRecord

ENV_URL = "CONVEYOR_HISTORY_URL"
DEFAULT_URL = "sqlite:///conveyor-history.db"


@dataclass(frozen=True, slots=True)
class WriteResult:
    written: int
    """Job records stored by this call."""
    duplicates: int
    """Job records already stored (a replay), or repeated within the batch: not stored again."""
    attempts: int
    """Attempt rows stored by this call."""


@dataclass(frozen=True, slots=True)
class PruneResult:
    deleted: dict[FinalState, int] = field(default_factory=dict)
    """Job records deleted row by row, per state."""
    dropped_partitions: list[str] = field(default_factory=list)
    """PostgreSQL: the monthly partitions dropped whole (jobs and attempts)."""
    created_partitions: list[str] = field(default_factory=list)
    """PostgreSQL: partitions created ahead for the coming months."""


@dataclass(frozen=True, slots=True)
class MigrationResult:
    applied: list[str]
    """The migrations this call applied (``NNNN_name``, ``.fallback`` when that was used)."""
    version: int
    """The schema version now."""


class HistoryStore(abc.ABC):
    """Durable, searchable history of finished jobs. Every method is a coroutine; a store is
    used from one event loop and closed with :meth:`close` (or ``async with``)."""

    backend: ClassVar[Literal["postgres", "sqlite"]]

    def __init__(self, config: HistoryConfig) -> None:
        self.config = config

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect (and migrate, unless ``config.migrate`` is off). :func:`open_store` calls it."""

    @abc.abstractmethod
    async def migrate(self) -> MigrationResult:
        """Apply pending migrations; safe to call from several processes at once."""

    @abc.abstractmethod
    async def write(self, batch: Sequence[JobRecord]) -> WriteResult:
        """Store finished jobs and their attempts in one transaction. Idempotent: records
        already stored (same queue, id, attempts, state, finished_at) are skipped, so a batch
        may be written again after a crash. Bad text (invalid UTF-8, NUL, huge) is stored
        cleaned and capped, never refused."""

    @abc.abstractmethod
    async def get(self, queue: str, job_id: str) -> JobRecord | None:
        """The latest record of a job, with its attempts; None if there is none."""

    @abc.abstractmethod
    async def search(self, query: SearchQuery) -> Page:
        """One page of matching records, newest first (without ``attempt_log``)."""

    @abc.abstractmethod
    async def stats(self, query: StatsQuery) -> list[StatsRow]:
        """Counts, failure rate and duration percentiles per bucket, queue and task, ordered
        by (start, queue, task)."""

    @abc.abstractmethod
    async def prune(self, now: datetime | None = None) -> PruneResult:
        """Delete what is older than the retention of its state, without long locks."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> HistoryStore:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


@dataclass(frozen=True, slots=True)
class ParsedUrl:
    backend: Literal["postgres", "sqlite"]
    target: str
    """A file path (or ``:memory:``) for SQLite, a libpq connection string for PostgreSQL."""


def parse_url(url: str) -> ParsedUrl:
    """Which backend ``url`` names, and where. Errors never repeat the URL (it may hold a
    password)."""
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme == "sqlite":
        parts = urlsplit(url)
        if parts.netloc or parts.query or parts.fragment:
            raise ValueError("a SQLite history URL is sqlite:///relative/path or sqlite:////absolute/path")
        path = unquote(parts.path)
        if path in ("", "/"):
            raise ValueError("a SQLite history URL needs a path: sqlite:///history.db or sqlite:///:memory:")
        return ParsedUrl("sqlite", path[1:])
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        if not rest:
            raise ValueError("a PostgreSQL history URL needs a host or a database")
        return ParsedUrl("postgres", "postgresql://" + rest)
    raise ValueError(f"history URL scheme {scheme!r} is not one of sqlite, postgresql")


async def open_store(url: str | None = None, config: HistoryConfig | None = None) -> HistoryStore:
    """Open the store ``url`` names (default: ``$CONVEYOR_HISTORY_URL``, else
    ``sqlite:///conveyor-history.db``), migrated unless ``config.migrate`` is off."""
    parsed = parse_url(url or os.environ.get(ENV_URL) or DEFAULT_URL)
    config = config or HistoryConfig()
    store: HistoryStore
    if parsed.backend == "sqlite":
        from .sqlite import SqliteStore

        store = SqliteStore(parsed.target, config)
    else:
        try:
            from .postgres import PostgresStore
        except ImportError as exc:  # pragma: no cover - depends on what is installed
            raise RuntimeError(
                "the PostgreSQL history needs psycopg: pip install 'conveyor[history]'"
            ) from exc
        store = PostgresStore(parsed.target, config)
    try:
        await store.open()
    except BaseException:
        await store.close()
        raise
    return store

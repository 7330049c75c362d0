"""The SQLite backend: the embedded default, stdlib ``sqlite3``, one file, no server.

sqlite3 blocks, so each connection lives in a thread of its own and the coroutines hand it
work (:class:`_Connection`): one connection writes (writes, migrations, prunes: SQLite has one
writer at a time anyway) and one reads, so searches are not queued behind a large batch. The
file is in WAL mode, so the reader sees committed data while a write is in progress, and
several processes may share the file (``busy_timeout`` makes them wait their turn).

Text search is FTS5 with the trigram tokenizer (case-insensitive substrings of 3+ characters;
shorter needles, or an SQLite without FTS5, scan with LIKE). Stats: SQLite counts and
gathers each bucket's durations (through a covering index when the query names a task);
percentiles are then computed in Python exactly as PostgreSQL's ``percentile_cont`` does, over
a uniform sample once a bucket holds more than ``stats_sample_limit`` durations. About 1 µs a
job in the range on a laptop-class core. Retention deletes rows in batches, one short
transaction each.
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

from . import migrations
from .config import HistoryConfig
from .percentiles import percentile_cont
from .query import Page, SearchQuery, StatsQuery, StatsRow, failure_rate, from_micros, to_micros
from .records import FinalState, JobRecord
from .rows import (
    ATTEMPT_COLUMNS,
    JOB_COLUMNS,
    JOB_TIME_COLUMNS,
    PreparedJob,
    attempt_from_row,
    job_from_row,
    prepare_job,
)
from .sql import Dialect, TextPlan, build_get, build_search, build_text_probe, page_from_rows, text_plan
from .store import HistoryStore, MigrationResult, PruneResult, WriteResult

T = TypeVar("T")

_INSERT_JOB = (
    f"INSERT INTO jobs ({', '.join(JOB_COLUMNS)}) VALUES ({', '.join('?' for _ in JOB_COLUMNS)})"
    " ON CONFLICT DO NOTHING"
)
_INSERT_ATTEMPT = (
    f"INSERT INTO attempts (job_seq, {', '.join(ATTEMPT_COLUMNS)})"
    f" VALUES (?, {', '.join('?' for _ in ATTEMPT_COLUMNS)}) ON CONFLICT DO NOTHING"
)
_JOB_TIMES = tuple(i for i, c in enumerate(JOB_COLUMNS) if c in JOB_TIME_COLUMNS)
_ATTEMPT_TIMES = tuple(i for i, c in enumerate(ATTEMPT_COLUMNS) if c in ("started_at", "finished_at"))


def _micros_at(values: Sequence[Any], positions: Iterable[int]) -> tuple[Any, ...]:
    out = list(values)
    for i in positions:
        if out[i] is not None:
            out[i] = to_micros(out[i])
    return tuple(out)


class _Connection:
    """One sqlite3 connection, used only from its own thread."""

    def __init__(self, path: str, config: HistoryConfig, *, reader: bool, name: str) -> None:
        self._path = path
        self._config = config
        self._reader = reader
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(self._path)), exist_ok=True)
        # timeout= is SQLite's busy timeout: how long to wait for another process's lock.
        conn = sqlite3.connect(self._path, timeout=30.0, isolation_level=None, check_same_thread=False)
        if self._path != ":memory:":
            conn.execute("PRAGMA journal_mode = WAL")
            # NORMAL in WAL mode: a power cut may lose the last transactions, never corrupt.
            conn.execute("PRAGMA synchronous = NORMAL")
        if self._reader:
            conn.execute("PRAGMA query_only = ON")
        return conn

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            self._conn = self._connect()
        return fn(self._conn)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, fn)

    async def close(self) -> None:
        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._executor, close)
        self._executor.shutdown(wait=True)


def _transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    # IMMEDIATE takes the write lock at once, so two writers never deadlock upgrading a read.
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    for statement in migrations.split_sqlite(script):
        conn.execute(statement)


def _migrate(conn: sqlite3.Connection) -> MigrationResult:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version"
        " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)"
    )
    current = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
    applied: list[str] = []
    for migration in migrations.load("sqlite"):
        if migration.version <= current:
            continue
        used_fallback = False
        if migration.fallback is None:
            _run_script(conn, migration.sql)
        else:
            conn.execute("SAVEPOINT migration")
            try:
                _run_script(conn, migration.sql)
            except sqlite3.Error:
                conn.execute("ROLLBACK TO migration")
                _run_script(conn, migration.fallback)
                used_fallback = True
            conn.execute("RELEASE migration")
        name = migration.applied_name(used_fallback)
        conn.execute(
            "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
            (migration.version, name, to_micros(datetime.now(UTC))),
        )
        applied.append(f"{migration.version:04d}_{name}")
        current = migration.version
    return MigrationResult(applied, current)


def _text_mode(conn: sqlite3.Connection) -> str:
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'schema_version'").fetchone() is None:
        return "like"  # not migrated yet (migrate=False): migrate() decides
    row = conn.execute("SELECT name FROM schema_version WHERE version = 2").fetchone()
    return "fts5" if row is not None and not row[0].endswith(".fallback") else "like"


def _write(prepared: list[PreparedJob], conn: sqlite3.Connection) -> WriteResult:
    written = attempts = 0
    for job in prepared:
        cursor = conn.execute(_INSERT_JOB, _micros_at(job.values, _JOB_TIMES))
        if cursor.rowcount != 1:
            continue  # stored before: its attempts were stored with it
        written += 1
        if job.attempts:
            seq = cursor.lastrowid
            rows = [(seq, *_micros_at(a, _ATTEMPT_TIMES)) for a in job.attempts]
            attempts += conn.executemany(_INSERT_ATTEMPT, rows).rowcount
    return WriteResult(written, len(prepared) - written, attempts)


def _get(dialect: Dialect, queue: str, job_id: str, conn: sqlite3.Connection) -> JobRecord | None:
    sql, params = build_get(dialect, queue, job_id)
    row = conn.execute(sql, params).fetchone()
    if row is None:
        return None
    attempt_rows = conn.execute(
        f"SELECT {', '.join(ATTEMPT_COLUMNS)} FROM attempts WHERE job_seq = ? ORDER BY attempt", (row[-1],)
    ).fetchall()
    log = tuple(attempt_from_row(a, from_micros) for a in attempt_rows)
    return job_from_row(row, from_micros, log)


def _stats(query: StatsQuery, sample_limit: int, conn: sqlite3.Connection) -> list[StatsRow]:
    """Counts and durations are gathered by SQLite, one row per group: the durations as one
    ``group_concat`` string each, parsed in bulk, which is several times faster than a Python
    step per job. The percentiles are then computed here (SQLite has no percentile_cont)."""
    where = ["finished_at >= :since", "finished_at < :until"]
    params: dict[str, Any] = {
        "since": to_micros(query.since),
        "until": to_micros(query.until),
        "bucket": query.bucket_seconds * 1_000_000,
    }
    for column, value in (("task", query.task), ("queue", query.queue)):
        if value is not None:
            where.append(f"{column} = :{column}")
            params[column] = value
    counts = ", ".join(f"sum(state = '{state.value}')" for state in FinalState)
    sql = (
        # Floor division (SQLite's / truncates toward zero, wrong before 1970).
        "SELECT (finished_at - ((finished_at % :bucket) + :bucket) % :bucket) / :bucket AS b, queue, task,"
        f" {counts}, group_concat(wait_ms), group_concat(run_ms)"
        f" FROM jobs WHERE {' AND '.join(where)} GROUP BY b, queue, task ORDER BY b, queue, task"
    )
    rows: list[StatsRow] = []
    n = len(FinalState)
    for row in conn.execute(sql, params):
        bucket, queue, task = row[:3]
        by_state = dict(zip(FinalState, (int(c) for c in row[3 : 3 + n]), strict=True))
        rows.append(
            StatsRow(
                start=from_micros(bucket * params["bucket"]),
                queue=queue,
                task=task,
                counts=by_state,
                failure_rate=failure_rate(by_state),
                wait_ms=_percentiles(row[3 + n], query.percentiles, sample_limit),
                run_ms=_percentiles(row[4 + n], query.percentiles, sample_limit),
            )
        )
    return rows


def _percentiles(joined: str | None, fractions: Sequence[float], limit: int) -> dict[float, float | None]:
    values = [float(v) for v in joined.split(",")] if joined else []
    if len(values) > limit:
        # Seeded: the same query over the same rows gives the same answer.
        values = random.Random(len(values)).sample(values, limit)
    values.sort()
    return {p: percentile_cont(values, p) for p in fractions}


def _prune_batch(state: FinalState, cutoff_us: int, limit: int, conn: sqlite3.Connection) -> int:
    seqs = [
        (seq,)
        for (seq,) in conn.execute(
            "SELECT seq FROM jobs WHERE state = ? AND finished_at < ? LIMIT ?",
            (state.value, cutoff_us, limit),
        )
    ]
    conn.executemany("DELETE FROM attempts WHERE job_seq = ?", seqs)
    conn.executemany("DELETE FROM jobs WHERE seq = ?", seqs)
    return len(seqs)


class SqliteStore(HistoryStore):
    backend = "sqlite"

    def __init__(self, path: str, config: HistoryConfig) -> None:
        super().__init__(config)
        self.path = path
        self._writer: _Connection | None = None
        self._reader: _Connection | None = None
        self._dialect = Dialect("sqlite", "jobs", "attempts", "like", fts="jobs_fts")

    async def open(self) -> None:
        self._writer = _Connection(self.path, self.config, reader=False, name="conveyor-history-write")
        # An in-memory database exists only in its one connection: reads share it.
        self._reader = (
            self._writer
            if self.path == ":memory:"
            else _Connection(self.path, self.config, reader=True, name="conveyor-history-read")
        )
        if self.config.migrate:
            await self.migrate()
        else:
            await self._load_text_mode()

    def _conns(self) -> tuple[_Connection, _Connection]:
        if self._writer is None or self._reader is None:
            raise RuntimeError("the history store is not open")
        return self._writer, self._reader

    async def _load_text_mode(self) -> None:
        writer, _ = self._conns()
        mode = await writer.run(_text_mode)
        self._dialect = Dialect(
            "sqlite", "jobs", "attempts", "fts5" if mode == "fts5" else "like", fts="jobs_fts"
        )

    async def migrate(self) -> MigrationResult:
        writer, _ = self._conns()
        result = await writer.run(functools.partial(_transaction, fn=_migrate))
        await self._load_text_mode()
        return result

    async def write(self, batch: Sequence[JobRecord]) -> WriteResult:
        writer, _ = self._conns()
        if not batch:
            return WriteResult(0, 0, 0)
        limits = self.config.limits

        def write(conn: sqlite3.Connection) -> WriteResult:
            # Cleaning runs here, in the thread: a 10 MB traceback does not stall the loop.
            prepared = [prepare_job(record, limits) for record in batch]
            return _transaction(conn, functools.partial(_write, prepared))

        return await writer.run(write)

    async def get(self, queue: str, job_id: str) -> JobRecord | None:
        _, reader = self._conns()
        return await reader.run(functools.partial(_get, self._dialect, queue, job_id))

    async def search(self, query: SearchQuery) -> Page:
        _, reader = self._conns()
        dialect = self._dialect

        def run(conn: sqlite3.Connection) -> list[Any]:
            plan: TextPlan = "index"
            probe = build_text_probe(dialect, query.text) if query.text is not None else None
            if probe is not None:
                plan = text_plan(int(conn.execute(*probe).fetchone()[0]))
            return conn.execute(*build_search(query, dialect, plan)).fetchall()

        rows = await reader.run(run)
        return page_from_rows(query, rows, self._dialect)

    async def stats(self, query: StatsQuery) -> list[StatsRow]:
        _, reader = self._conns()
        return await reader.run(functools.partial(_stats, query, self.config.stats_sample_limit))

    async def prune(self, now: datetime | None = None) -> PruneResult:
        writer, _ = self._conns()
        now = now or datetime.now(UTC)
        deleted: dict[FinalState, int] = {}
        for state in FinalState:
            keep = self.config.retention.for_state(state)
            if keep is None:
                continue
            cutoff = to_micros(now - keep)
            total = 0
            while True:
                # One short transaction a batch, each its own turn on the writer thread, so
                # writes queued meanwhile go in between.
                batch = functools.partial(_prune_batch, state, cutoff, self.config.prune_batch)
                n = await writer.run(functools.partial(_transaction, fn=batch))
                total += n
                if n < self.config.prune_batch:
                    break
            deleted[state] = total
        return PruneResult(deleted=deleted)

    async def close(self) -> None:
        writer, reader = self._writer, self._reader
        self._writer = self._reader = None
        if reader is not None and reader is not writer:
            await reader.close()
        if writer is not None:
            await writer.close()

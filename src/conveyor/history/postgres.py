"""The PostgreSQL backend: psycopg 3, async, pooled (``pip install 'conveyor[history]'``).

Writes: one transaction a batch. The batch is COPied into temporary staging tables, then
moved with ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``: COPY is the fastest way in, and
the conflict clause (which COPY lacks) makes a replayed batch store nothing twice.

Partitioning: by final state, then by month of ``finished_at`` (see
:mod:`conveyor.history.partitions`). Retention drops a month's partition whole once all of
it is past the retention of its state, and deletes the rest row by row in batches; a drop
waits at most ``lock_timeout`` for its lock, and is retried at the next prune otherwise.

Text search: pg_trgm GIN indexes (``ILIKE '%text%'``) where the extension can be created,
else full-text GIN indexes (whole words). Stats: ``percentile_cont`` per bucket, exact.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
import psycopg.errors
from psycopg_pool import AsyncConnectionPool

from . import migrations, partitions
from .config import HistoryConfig
from .partitions import Month
from .query import Page, SearchQuery, StatsQuery, StatsRow, failure_rate
from .records import FinalState, JobRecord
from .rows import ATTEMPT_COLUMNS, JOB_COLUMNS, attempt_from_row, job_from_row, prepare_job
from .sql import Dialect, TextMode, build_get, build_search, build_text_probe, page_from_rows, text_plan
from .store import HistoryStore, MigrationResult, PruneResult, WriteResult

Conn = psycopg.AsyncConnection[tuple[Any, ...]]
_ATTEMPT_KEY = ("queue", "job_id", "job_attempts", "job_state", "job_finished_at")


def _lock_key(schema: str, purpose: str) -> int:
    """An advisory lock id of our own, per schema: a signed 64-bit integer."""
    digest = hashlib.blake2b(f"conveyor-history:{schema}:{purpose}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgresStore(HistoryStore):
    backend = "postgres"

    def __init__(self, conninfo: str, config: HistoryConfig) -> None:
        super().__init__(config)
        self._conninfo = conninfo
        self.schema = s = config.postgres_schema
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._dialect = Dialect("postgres", f"{s}.jobs", f"{s}.attempts", "trigram")
        self._months: set[Month] = set()
        """Months whose partitions (every state, both tables) this process knows exist."""
        self._migrate_lock = _lock_key(s, "migrate")
        self._partition_lock = _lock_key(s, "partitions")
        cols = ", ".join(JOB_COLUMNS)
        attempt_cols = ", ".join((*_ATTEMPT_KEY, *ATTEMPT_COLUMNS))
        # Staging tables live as long as the connection and are emptied at each commit:
        # creating them per batch cost 5% of a write. (Under a transaction-pooling proxy, a
        # server connection may lack them; IF NOT EXISTS in every write covers that too.)
        self._stage_sql = (
            f"CREATE TEMPORARY TABLE IF NOT EXISTS cv_jobs_in ON COMMIT DELETE ROWS AS"
            f" SELECT {cols} FROM {s}.jobs WITH NO DATA;"
            f" CREATE TEMPORARY TABLE IF NOT EXISTS cv_attempts_in ON COMMIT DELETE ROWS AS"
            f" SELECT {attempt_cols} FROM {s}.attempts WITH NO DATA"
        )
        self._copy_jobs = f"COPY cv_jobs_in ({cols}) FROM STDIN"
        self._copy_attempts = f"COPY cv_attempts_in ({attempt_cols}) FROM STDIN"
        self._insert_jobs = (
            f"INSERT INTO {s}.jobs ({cols}) SELECT {cols} FROM cv_jobs_in ON CONFLICT DO NOTHING"
        )
        self._insert_attempts = (
            f"INSERT INTO {s}.attempts ({attempt_cols}) SELECT {attempt_cols} FROM cv_attempts_in"
            " ON CONFLICT DO NOTHING"
        )

    # -- connection -------------------------------------------------------------------------

    async def open(self) -> None:
        self._pool = AsyncConnectionPool(
            self._conninfo,
            min_size=self.config.pool_min_size,
            max_size=self.config.pool_max_size,
            kwargs={"autocommit": True},
            configure=self._configure,
            open=False,
            name="conveyor-history",
        )
        await self._pool.open(wait=True, timeout=30.0)
        if self.config.migrate:
            await self.migrate()
        else:
            await self._load_text_mode()

    @staticmethod
    async def _configure(conn: Conn) -> None:
        # Times come back in UTC, and buckets never depend on a server's time zone.
        await conn.execute("SET TIME ZONE 'UTC'")
        # psycopg prepares a query it has run 5 times, and PostgreSQL may then switch to a
        # generic plan, which knows neither the months (no partition pruning at plan time)
        # nor the text pattern (trigram indexes costed blind): searches got 3x slower.
        await conn.execute("SET plan_cache_mode = force_custom_plan")
        # "relation already exists, skipping" from the IF NOT EXISTS of every write is noise.
        await conn.execute("SET client_min_messages = warning")

    def _p(self) -> AsyncConnectionPool[Conn]:
        if self._pool is None:
            raise RuntimeError("the history store is not open")
        return self._pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    # -- schema -----------------------------------------------------------------------------

    async def migrate(self) -> MigrationResult:
        s = self.schema
        applied: list[str] = []
        async with self._p().connection() as conn, conn.transaction():
            # Processes starting at once queue here; the later ones then find nothing to do.
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._migrate_lock,))
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {s}.schema_version (version integer PRIMARY KEY,"
                " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur = await conn.execute(f"SELECT coalesce(max(version), 0) FROM {s}.schema_version")
            row = await cur.fetchone()
            current = int(row[0]) if row else 0
            for migration in migrations.load("postgres"):
                if migration.version <= current:
                    continue
                used_fallback = await self._apply(conn, migration)
                name = migration.applied_name(used_fallback)
                await conn.execute(
                    f"INSERT INTO {s}.schema_version (version, name) VALUES (%s, %s)",
                    (migration.version, name),
                )
                applied.append(f"{migration.version:04d}_{name}")
                current = migration.version
        await self._load_text_mode()
        now = partitions.month_of(datetime.now(UTC))
        await self._ensure_partitions(
            partitions.months_between(
                partitions.add_months(now, -1), partitions.add_months(now, self.config.partitions_ahead)
            )
        )
        return MigrationResult(applied, current)

    async def _apply(self, conn: Conn, migration: migrations.Migration) -> bool:
        """Run one migration; True if its fallback was used."""
        sql = migration.sql.replace("{{schema}}", self.schema)
        if migration.fallback is None:
            await conn.execute(sql)
            return False
        if self.config.text_search == "auto":
            try:
                async with conn.transaction():  # a savepoint: a failure leaves the rest intact
                    await conn.execute(sql)
                return False
            except psycopg.Error:
                pass
        await conn.execute(migration.fallback.replace("{{schema}}", self.schema))
        return True

    async def _load_text_mode(self) -> None:
        s = self.schema
        async with self._p().connection() as conn:
            cur = await conn.execute("SELECT to_regclass(%s)", (f"{s}.schema_version",))
            found = await cur.fetchone()
            if found is None or found[0] is None:
                return  # not migrated yet (migrate=False): migrate() decides
            cur = await conn.execute(f"SELECT name FROM {s}.schema_version WHERE version = 2")
            row = await cur.fetchone()
        mode: TextMode = "fulltext" if row is None or str(row[0]).endswith(".fallback") else "trigram"
        self._dialect = Dialect("postgres", f"{s}.jobs", f"{s}.attempts", mode)

    async def _ensure_partitions(self, months: Iterable[Month]) -> list[str]:
        """Create the partitions of ``months`` that do not exist yet; the names created."""
        missing = sorted(set(months) - self._months)
        if not missing:
            return []
        s = self.schema
        created: list[str] = []
        async with self._p().connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._partition_lock,))
            existing = set(await self._partition_names(conn))
            for month in missing:
                for table in partitions.TABLES:
                    for state in FinalState:
                        name = partitions.name(table, state, month)
                        if name in existing:
                            continue
                        start, end = partitions.bound(month), partitions.bound(partitions.next_month(month))
                        await conn.execute(
                            f"CREATE TABLE {s}.{name} PARTITION OF {s}.{table}_{state.value}"
                            f" FOR VALUES FROM ('{start}') TO ('{end}')"
                        )
                        created.append(name)
        self._months.update(missing)
        return created

    async def _partition_names(self, conn: Conn) -> list[str]:
        cur = await conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace"
            " WHERE n.nspname = %s AND c.relispartition",
            (self.schema,),
        )
        return [str(r[0]) for r in await cur.fetchall()]

    # -- writes -----------------------------------------------------------------------------

    async def write(self, batch: Sequence[JobRecord]) -> WriteResult:
        if not batch:
            return WriteResult(0, 0, 0)
        prepared = [prepare_job(record, self.config.limits) for record in batch]
        jobs = [p.values for p in prepared]
        # An attempt row starts with its job's key, in _ATTEMPT_KEY's order.
        attempts = [(p.values[1], p.values[0], *p.values[2:5], *a) for p in prepared for a in p.attempts]
        months = {partitions.month_of(v[4]) for v in jobs}
        await self._ensure_partitions(months)
        try:
            written, stored_attempts = await self._insert(jobs, attempts)
        except psycopg.errors.CheckViolation:
            # "No partition for row": a prune elsewhere dropped a month this process thought
            # it had. Look again and retry once.
            self._months.clear()
            await self._ensure_partitions(months)
            written, stored_attempts = await self._insert(jobs, attempts)
        return WriteResult(written, len(jobs) - written, stored_attempts)

    async def _insert(self, jobs: list[tuple[Any, ...]], attempts: list[tuple[Any, ...]]) -> tuple[int, int]:
        async with self._p().connection() as conn, conn.transaction():
            cur = conn.cursor()
            await cur.execute(self._stage_sql)
            async with cur.copy(self._copy_jobs) as copy:
                for row in jobs:
                    await copy.write_row(row)
            await cur.execute(self._insert_jobs)
            written = cur.rowcount
            stored_attempts = 0
            if attempts:
                async with cur.copy(self._copy_attempts) as copy:
                    for row in attempts:
                        await copy.write_row(row)
                await cur.execute(self._insert_attempts)
                stored_attempts = cur.rowcount
        return written, stored_attempts

    # -- reads ------------------------------------------------------------------------------

    async def get(self, queue: str, job_id: str) -> JobRecord | None:
        sql, params = build_get(self._dialect, queue, job_id)
        async with self._p().connection() as conn:
            cur = await conn.execute(sql, params)
            row = await cur.fetchone()
            if row is None:
                return None
            job_id_, queue_, job_attempts, state, finished_at = row[:5]
            cur = await conn.execute(
                f"SELECT {', '.join(ATTEMPT_COLUMNS)} FROM {self.schema}.attempts"
                " WHERE job_id = %s AND queue = %s AND job_attempts = %s AND job_state = %s"
                " AND job_finished_at = %s ORDER BY attempt",
                (job_id_, queue_, job_attempts, state, finished_at),
            )
            read_time = self._dialect.read_time()
            log = tuple(attempt_from_row(a, read_time) for a in await cur.fetchall())
        return job_from_row(row, read_time, log)

    async def search(self, query: SearchQuery) -> Page:
        sql, params = build_search(query, self._dialect)
        probe = build_text_probe(self._dialect, query.text) if query.text is not None else None
        async with self._p().connection() as conn, conn.transaction():
            if probe is not None:
                # Counted and, for a rare term, searched through the trigram indexes: with
                # index scans off, each partition is read by bitmap from them, its matches
                # sorted by time. Left to itself, the planner walked every partition newest
                # first, testing each job (2.5 s at a million jobs for a term in 0.5 % of them).
                await conn.execute("SET LOCAL enable_indexscan = off")
                await conn.execute("SET LOCAL enable_seqscan = off")
                counted = await (await conn.execute(*probe)).fetchone()
                if text_plan(int(counted[0]) if counted else 0) == "order":
                    await conn.execute("SET LOCAL enable_indexscan = on")
                    await conn.execute("SET LOCAL enable_seqscan = on")
            cur = await conn.execute(sql, params)
            rows = await cur.fetchall()
        return page_from_rows(query, rows, self._dialect)

    async def stats(self, query: StatsQuery) -> list[StatsRow]:
        states = list(FinalState)
        counts = ", ".join(f"count(*) FILTER (WHERE state = '{state.value}')" for state in states)
        where = ["finished_at >= %s", "finished_at < %s"]
        params: list[Any] = [query.bucket_seconds, query.since, query.until]
        for column, value in (("task", query.task), ("queue", query.queue)):
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)
        pcts = list(query.percentiles)
        sql = (
            "SELECT floor(extract(epoch FROM finished_at) / %s)::bigint AS bucket, queue, task, "
            f"{counts}, percentile_cont(%s::float8[]) WITHIN GROUP (ORDER BY wait_ms),"
            " percentile_cont(%s::float8[]) WITHIN GROUP (ORDER BY run_ms)"
            f" FROM {self.schema}.jobs WHERE {' AND '.join(where)} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        )
        # The percentile arrays come after the counts in the SELECT, before the WHERE.
        params = [params[0], pcts, pcts, *params[1:]]
        async with self._p().connection() as conn:
            cur = await conn.execute(sql, params)
            rows = await cur.fetchall()
        out: list[StatsRow] = []
        for row in rows:
            bucket, queue, task = row[:3]
            by_state = dict(zip(states, (int(n) for n in row[3 : 3 + len(states)]), strict=True))
            waits, runs = row[3 + len(states) :]
            out.append(
                StatsRow(
                    start=datetime.fromtimestamp(int(bucket) * query.bucket_seconds, UTC),
                    queue=queue,
                    task=task,
                    counts=by_state,
                    failure_rate=failure_rate(by_state),
                    wait_ms=_percentiles(pcts, waits),
                    run_ms=_percentiles(pcts, runs),
                )
            )
        return out

    # -- retention --------------------------------------------------------------------------

    async def prune(self, now: datetime | None = None) -> PruneResult:
        now = (now or datetime.now(UTC)).astimezone(UTC)
        this_month = partitions.month_of(now)
        created = await self._ensure_partitions(
            partitions.months_between(
                this_month, partitions.add_months(this_month, self.config.partitions_ahead)
            )
        )
        dropped = await self._drop_expired_partitions(now)
        deleted: dict[FinalState, int] = {}
        for state in FinalState:
            keep = self.config.retention.for_state(state)
            if keep is not None:
                deleted[state] = await self._delete_expired_rows(state, now - keep)
        return PruneResult(deleted=deleted, dropped_partitions=dropped, created_partitions=created)

    async def _drop_expired_partitions(self, now: datetime) -> list[str]:
        s = self.schema
        async with self._p().connection() as conn:
            names = await self._partition_names(conn)
        expired: dict[tuple[FinalState, Month], list[str]] = {}
        for relname in names:
            parsed = partitions.parse(relname)
            if parsed is None:
                continue
            _, state, month = parsed
            keep = self.config.retention.for_state(state)
            if keep is not None and partitions.ends_before(month, now - keep):
                expired.setdefault((state, month), []).append(relname)
        dropped: list[str] = []
        lock_ms = int(self.config.lock_timeout.total_seconds() * 1000)
        for (_, month), relnames in sorted(expired.items()):
            try:
                async with self._p().connection() as conn, conn.transaction():
                    # Dropping takes an exclusive lock on the parent: never queue writers
                    # behind us for long. Jobs and their attempts go together or not at all.
                    await conn.execute(f"SET LOCAL lock_timeout = {lock_ms}")
                    for relname in sorted(relnames):
                        await conn.execute(f"DROP TABLE IF EXISTS {s}.{relname}")
            except psycopg.errors.LockNotAvailable:
                continue
            dropped.extend(sorted(relnames))
            self._months.discard(month)
        return dropped

    async def _delete_expired_rows(self, state: FinalState, cutoff: datetime) -> int:
        s = self.schema
        # Each statement is its own short transaction (autocommit), one batch at a time.
        sql = (
            f"WITH victims AS (SELECT id, queue, attempts, finished_at FROM {s}.jobs"
            "  WHERE state = %(state)s AND finished_at < %(cutoff)s LIMIT %(limit)s),"
            f" gone AS (DELETE FROM {s}.attempts a USING victims v WHERE a.job_state = %(state)s"
            "  AND a.job_id = v.id AND a.queue = v.queue AND a.job_attempts = v.attempts"
            "  AND a.job_finished_at = v.finished_at)"
            f" DELETE FROM {s}.jobs j USING victims v WHERE j.state = %(state)s AND j.id = v.id"
            " AND j.queue = v.queue AND j.attempts = v.attempts AND j.finished_at = v.finished_at"
        )
        params = {"state": state.value, "cutoff": cutoff, "limit": self.config.prune_batch}
        total = 0
        while True:
            async with self._p().connection() as conn:
                cur = await conn.execute(sql, params)
                total += cur.rowcount
            if cur.rowcount < self.config.prune_batch:
                return total


def _percentiles(fractions: list[float], values: list[float | None] | None) -> dict[float, float | None]:
    if values is None:
        return dict.fromkeys(fractions)
    return dict(zip(fractions, values, strict=True))

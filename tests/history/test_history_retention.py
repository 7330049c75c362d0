"""Retention: records older than their state's retention go; on PostgreSQL whole monthly
partitions are dropped and only the month the cutoff falls in is trimmed row by row."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from conveyor.history import (
    FinalState,
    HistoryConfig,
    HistoryStore,
    JobRecord,
    Retention,
    SearchQuery,
    open_store,
)

MakeJob = Callable[..., JobRecord]
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


async def remaining(store: HistoryStore) -> set[str]:
    return {r.id for r in (await store.search(SearchQuery(limit=1000))).items}


@pytest.fixture
def config() -> HistoryConfig:
    # Small batches: the row-by-row part of a prune runs several of them.
    return HistoryConfig(prune_batch=2)


async def test_prune_by_age_per_state(store: HistoryStore, backend: str, make_job: MakeJob) -> None:
    ages = {  # id: (state, age); defaults keep completed 30 days, failed 90, the others 30
        "c-29d": ("completed", 29 * DAY),
        "c-31d": ("completed", 31 * DAY),
        "c-32d": ("completed", 32 * DAY),
        "c-33d": ("completed", 33 * DAY),
        "c-100d": ("completed", 100 * DAY),
        "f-31d": ("failed", 31 * DAY),
        "f-89d": ("failed", 89 * DAY),
        "f-91d": ("failed", 91 * DAY),
        "f-200d": ("failed", 200 * DAY),
        "x-29d": ("cancelled", 29 * DAY),
        "x-31d": ("cancelled", 31 * DAY),
        "e-40d": ("expired", 40 * DAY),
        "r-40d": ("removed", 40 * DAY),
        "future": ("completed", -DAY),
    }
    await store.write(
        [make_job(i, state=state, finished=NOW - age, attempts=2) for i, (state, age) in ages.items()]
    )
    result = await store.prune(NOW)

    assert await remaining(store) == {"c-29d", "f-31d", "f-89d", "x-29d", "future"}
    for gone in ("c-31d", "c-100d", "f-200d"):
        assert await store.get("q", gone) is None
    kept = await store.get("q", "f-89d")
    assert kept is not None and len(kept.attempt_log) == 2
    # Pruning again finds nothing more.
    again = await store.prune(NOW)
    assert sum(again.deleted.values()) == 0 and again.dropped_partitions == []

    if backend == "postgres":
        # Completed: cutoff May 16, so March (c-100d) went whole, May 13-15 row by row.
        # Failed: cutoff March 17, so December (f-200d) went whole, March 16 row by row.
        assert {"jobs_completed_p202603", "attempts_completed_p202603"} <= set(result.dropped_partitions)
        assert {"jobs_failed_p202511", "attempts_failed_p202511"} <= set(result.dropped_partitions)
        assert "jobs_failed_p202603" not in result.dropped_partitions
        assert result.deleted[FinalState.COMPLETED] == 3  # c-31d, c-32d, c-33d
        assert result.deleted[FinalState.FAILED] == 1  # f-91d
        assert "jobs_completed_p202608" in result.created_partitions  # two months ahead
    else:
        assert result.deleted[FinalState.COMPLETED] == 4
        assert result.deleted[FinalState.FAILED] == 2
    assert result.deleted[FinalState.CANCELLED] == 1


async def test_retention_is_configurable_and_none_keeps_forever(store_url: str, make_job: MakeJob) -> None:
    config = HistoryConfig(retention=Retention(completed=None, failed=timedelta(days=1)))
    async with await open_store(store_url, config) as store:
        await store.write(
            [
                make_job("old-ok", finished=NOW - 1000 * DAY),
                make_job("old-fail", state="failed", finished=NOW - 2 * DAY),
                make_job("new-fail", state="failed", finished=NOW - timedelta(hours=1)),
            ]
        )
        await store.prune(NOW)
        assert await remaining(store) == {"old-ok", "new-fail"}


async def test_writes_after_a_prune_dropped_their_month(
    store_url: str, backend: str, make_job: MakeJob
) -> None:
    """A late record for a month another process dropped is stored, not refused."""
    async with await open_store(store_url) as writer, await open_store(store_url) as pruner:
        await writer.write([make_job("before", finished=NOW - 100 * DAY)])
        await pruner.prune(NOW)
        assert await remaining(writer) == set()
        # The writer still believes the month's partitions exist; they were dropped.
        result = await writer.write([make_job("late", finished=NOW - 100 * DAY)])
        assert result.written == 1
        assert await remaining(writer) == {"late"}
        await pruner.prune(NOW)
        assert await remaining(writer) == set()


async def test_any_month_can_be_written(store: HistoryStore, make_job: MakeJob) -> None:
    far = [
        make_job("y1970", finished=datetime(1970, 1, 1, tzinfo=UTC)),
        make_job("y9999", finished=datetime(9999, 12, 31, 23, 59, tzinfo=UTC)),
        make_job("dec", finished=datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        make_job("jan", finished=datetime(2027, 1, 1, tzinfo=UTC)),
    ]
    assert (await store.write(far)).written == 4
    assert await remaining(store) == {"y1970", "y9999", "dec", "jan"}
    got = await store.get("q", "dec")
    assert got is not None and got.finished_at == datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)

"""Stats: counts, failure rate and duration percentiles per bucket, queue and task."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from conveyor.history import FinalState, HistoryConfig, HistoryStore, JobRecord, StatsQuery, open_store
from conveyor.history.percentiles import percentile_cont

MakeJob = Callable[..., JobRecord]
HOUR = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def timed(
    make_job: MakeJob, job_id: str, at: datetime, *, wait: float, run: float, **fields: object
) -> JobRecord:
    return make_job(job_id, finished=at, wait_ms=wait, run_ms=run, **fields)


async def test_counts_failure_rate_and_percentiles(store: HistoryStore, make_job: MakeJob) -> None:
    jobs = [
        timed(make_job, f"c{i}", HOUR + timedelta(minutes=i), wait=i + 1, run=10 * (i + 1)) for i in range(10)
    ]
    jobs += [
        timed(make_job, f"f{i}", HOUR + timedelta(minutes=i), wait=1, run=5, state="failed") for i in range(5)
    ]
    # Never ran: counted, but no durations.
    jobs += [
        make_job(f"x{i}", finished=HOUR, state="cancelled", started_at=None, attempts=0) for i in range(2)
    ]
    jobs.append(make_job("e", finished=HOUR, state="expired", started_at=None, attempts=0, enqueued_at=None))
    # Outside the range, another task, another queue: not in this row.
    jobs.append(timed(make_job, "late", HOUR + timedelta(hours=1), wait=1, run=1))
    jobs.append(timed(make_job, "other", HOUR, wait=1, run=1, task="app.other"))
    jobs.append(timed(make_job, "elsewhere", HOUR, wait=1, run=1, queue="q2"))
    await store.write(jobs)

    rows = await store.stats(
        StatsQuery(since=HOUR, until=HOUR + timedelta(hours=1), bucket="hour", task="app.work", queue="q")
    )
    assert len(rows) == 1
    [row] = rows
    assert (row.start, row.queue, row.task) == (HOUR, "q", "app.work")
    assert row.counts == {
        FinalState.COMPLETED: 10,
        FinalState.FAILED: 5,
        FinalState.CANCELLED: 2,
        FinalState.EXPIRED: 1,
        FinalState.REMOVED: 0,
    }
    assert row.total == 18
    assert row.failure_rate == pytest.approx(5 / 15)
    # run: 10, 20 ... 100 and five 5s -> sorted [5]*5 + [10..100]: 15 values.
    assert row.run_ms[0.5] == pytest.approx(30.0)
    assert row.run_ms[0.9] == pytest.approx(86.0)  # position 12.6: 80 + 0.6 * 10
    assert row.run_ms[0.99] == pytest.approx(98.6)  # position 13.86: 90 + 0.86 * 10
    # wait: 1..10 and five 1s -> [1]*6 + [2..10]
    assert row.wait_ms[0.5] == pytest.approx(3.0)
    assert row.wait_ms[0.95] == pytest.approx(9.3)  # position 13.3: 9 + 0.3


async def test_buckets_group_by_minute_hour_and_day(store: HistoryStore, make_job: MakeJob) -> None:
    times = [HOUR, HOUR + timedelta(seconds=59), HOUR + timedelta(minutes=1), HOUR + timedelta(hours=2)]
    times.append(HOUR + timedelta(days=1))
    await store.write([timed(make_job, f"j{i}", at, wait=1, run=i) for i, at in enumerate(times)])
    day = HOUR.replace(hour=0)

    async def buckets(bucket: str) -> list[tuple[datetime, int]]:
        query = StatsQuery(since=day, until=day + timedelta(days=2), bucket=bucket)  # type: ignore[arg-type]
        return [(r.start, r.total) for r in await store.stats(query)]

    assert await buckets("minute") == [
        (HOUR, 2),
        (HOUR + timedelta(minutes=1), 1),
        (HOUR + timedelta(hours=2), 1),
        (HOUR + timedelta(days=1), 1),
    ]
    assert await buckets("hour") == [(HOUR, 3), (HOUR + timedelta(hours=2), 1), (HOUR + timedelta(days=1), 1)]
    assert await buckets("day") == [(day, 4), (day + timedelta(days=1), 1)]


async def test_rows_per_queue_and_task(store: HistoryStore, make_job: MakeJob) -> None:
    await store.write(
        [
            timed(make_job, "a", HOUR, wait=1, run=1, queue="q1", task="t1"),
            timed(make_job, "b", HOUR, wait=1, run=1, queue="q1", task="t2", state="failed"),
            timed(make_job, "c", HOUR, wait=1, run=1, queue="q2", task="t1"),
        ]
    )
    rows = await store.stats(StatsQuery(since=HOUR, until=HOUR + timedelta(hours=1)))
    assert [(r.queue, r.task, r.total, r.failure_rate) for r in rows] == [
        ("q1", "t1", 1, 0.0),
        ("q1", "t2", 1, 1.0),
        ("q2", "t1", 1, 0.0),
    ]
    only_cancelled = await store.stats(StatsQuery(since=HOUR - timedelta(hours=1), until=HOUR))
    assert only_cancelled == []


async def test_no_durations_means_no_percentiles(store: HistoryStore, make_job: MakeJob) -> None:
    await store.write([make_job("x", finished=HOUR, state="cancelled", started_at=None, enqueued_at=None)])
    [row] = await store.stats(StatsQuery(since=HOUR, until=HOUR + timedelta(hours=1), percentiles=(0.5,)))
    assert row.failure_rate is None
    assert row.wait_ms == {0.5: None} and row.run_ms == {0.5: None}


async def test_sqlite_samples_a_crowded_bucket(tmp_path: object, make_job: MakeJob) -> None:
    config = HistoryConfig(stats_sample_limit=50)
    async with await open_store(f"sqlite:///{tmp_path}/h.db", config) as store:
        await store.write([timed(make_job, f"j{i}", HOUR, wait=i, run=i) for i in range(1000)])
        [row] = await store.stats(StatsQuery(since=HOUR, until=HOUR + timedelta(hours=1)))
    assert row.total == 1000  # counts stay exact
    median = row.run_ms[0.5]
    assert median is not None and 300 < median < 700  # from 50 values: near 499.5


def test_percentile_cont_matches_postgresql() -> None:
    assert percentile_cont([], 0.5) is None
    assert percentile_cont([7.0], 0.99) == 7.0
    assert percentile_cont([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile_cont([10.0, 20.0], 0.0) == 10.0
    assert percentile_cont([10.0, 20.0], 1.0) == 20.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"until": HOUR},  # empty range
        {"bucket": "week"},
        {"bucket": "minute", "until": HOUR + timedelta(days=60)},  # too many buckets
        {"percentiles": (1.5,)},
        {"percentiles": ()},
        {"task": ""},
    ],
)
def test_bad_stats_queries_are_refused(kwargs: dict[str, object]) -> None:
    values: dict[str, object] = {"since": HOUR, "until": HOUR + timedelta(days=1), **kwargs}
    with pytest.raises(ValueError):
        StatsQuery(**values)  # type: ignore[arg-type]

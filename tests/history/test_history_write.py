"""Writing finished jobs: every field kept, idempotent writes, bad input stored capped."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from conveyor.history import (
    AttemptOutcome,
    AttemptRecord,
    FinalState,
    HistoryConfig,
    HistoryStore,
    JobRecord,
    Limits,
    SearchQuery,
    open_store,
)
from conveyor.history.capping import CUT_MARKER

MakeJob = Callable[..., JobRecord]
T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


async def test_every_field_round_trips(store: HistoryStore) -> None:
    log = (
        AttemptRecord(1, AttemptOutcome.LOST, worker="w-dead", started_at=T0 - timedelta(minutes=5)),
        AttemptRecord(
            2,
            AttemptOutcome.RETRIED,
            worker="w-2",
            started_at=T0 - timedelta(minutes=2),
            finished_at=T0 - timedelta(minutes=1),
            error_type="TimeoutError",
            error_message="took too long",
        ),
        AttemptRecord(
            3, AttemptOutcome.FAILED, worker="w-3", started_at=T0 - timedelta(seconds=3), finished_at=T0
        ),
    )
    record = JobRecord(
        queue="emails",
        id="order/7",
        task="app.send",
        state=FinalState.FAILED,
        finished_at=T0,
        attempts=3,
        arguments='[["a@example.com"], {"retry": true}]',
        result=None,
        error_type="SMTPError",
        error_message="550 mailbox unavailable",
        traceback='Traceback (most recent call last):\n  File "app.py", line 3\nSMTPError: 550',
        priority=-5,
        group="tenant-9",
        parent=("orders", "o-1"),
        flow="o-1",
        schedule="nightly",
        enqueued_at=T0 - timedelta(minutes=10),
        scheduled_for=T0 - timedelta(minutes=6),
        started_at=T0 - timedelta(seconds=3),
        worker="w-3",
        attempt_log=log,
    )
    result = await store.write([record])
    assert (result.written, result.duplicates, result.attempts) == (1, 0, 3)

    got = await store.get("emails", "order/7")
    assert got is not None
    # Durations are derived: wait from due (scheduled_for) to the first attempt's start.
    assert got.wait_ms == pytest.approx(60_000)
    assert got.run_ms == pytest.approx(3_000)
    expected = JobRecord(**{**_fields(record), "wait_ms": 60_000.0, "run_ms": 3_000.0})
    assert _fields(got) == _fields(expected)
    assert got.attempt_log == log
    assert got.truncated == frozenset()


def _fields(record: JobRecord) -> dict[str, object]:
    return {name: getattr(record, name) for name in JobRecord.__dataclass_fields__}


async def test_the_same_batch_twice_is_stored_once(store: HistoryStore, make_job: MakeJob) -> None:
    batch = [make_job(f"j{i}", finished=T0 + timedelta(seconds=i), attempts=2) for i in range(20)]
    first = await store.write(batch)
    again = await store.write(batch)
    assert (first.written, first.duplicates, first.attempts) == (20, 0, 40)
    assert (again.written, again.duplicates, again.attempts) == (0, 20, 0)
    page = await store.search(SearchQuery(limit=100))
    assert sorted(r.id for r in page.items) == sorted(f"j{i}" for i in range(20))
    got = await store.get("q", "j3")
    assert got is not None and [a.attempt for a in got.attempt_log] == [1, 2]


async def test_a_replay_with_new_jobs_stores_only_the_new(store: HistoryStore, make_job: MakeJob) -> None:
    old = [make_job(f"old{i}", finished=T0 + timedelta(seconds=i)) for i in range(5)]
    await store.write(old)
    new = [make_job(f"new{i}", finished=T0 + timedelta(seconds=i)) for i in range(3)]
    # A duplicate inside one batch is stored once too.
    result = await store.write([*old, *new, new[0]])
    assert (result.written, result.duplicates, result.attempts) == (3, 6, 3)
    assert len((await store.search(SearchQuery(limit=100))).items) == 8


async def test_a_job_that_ended_twice_keeps_both_records(store: HistoryStore, make_job: MakeJob) -> None:
    failed = make_job("j", state="failed", attempts=3, error_message="boom")
    # Retried by hand after it was dead-lettered, then completed on its fourth attempt.
    completed = make_job("j", finished=T0 + timedelta(hours=1), attempts=4)
    await store.write([failed])
    await store.write([completed])
    latest = await store.get("q", "j")
    assert latest is not None and latest.state == FinalState.COMPLETED and latest.attempts == 4
    assert len(latest.attempt_log) == 4
    both = await store.search(SearchQuery(id="j"))
    assert [(r.state, r.attempts) for r in both.items] == [(FinalState.COMPLETED, 4), (FinalState.FAILED, 3)]


async def test_get_of_an_unknown_job_is_none(store: HistoryStore, make_job: MakeJob) -> None:
    await store.write([make_job("known")])
    assert await store.get("q", "unknown") is None
    assert await store.get("other-queue", "known") is None
    assert (await store.write([])).written == 0


async def test_bad_text_is_stored_cleaned_and_capped(store: HistoryStore, make_job: MakeJob) -> None:
    traceback = "Traceback (most recent call last):\n" + "  File x\n" * 1_200_000  # ~10.8 MB
    record = make_job(
        "bad\x00id",
        arguments=b'[["\xff\xfe caf\xc3\xa9", "nul\x00here"], {}]',
        error_type="Value\x00Error",
        error_message="lone surrogate \ud800 and NUL \x00",
        traceback=traceback,
        result=b"\x80\x81",
        state="failed",
    )
    assert (await store.write([record])).written == 1

    got = await store.get("q", "bad\\x00id")
    assert got is not None
    assert got.arguments == '[["\\xff\\xfe café", "nul\\x00here"], {}]'
    assert got.error_type == "Value\\x00Error"
    assert got.error_message == "lone surrogate \\ud800 and NUL \\x00"
    assert got.result == "\\x80\\x81"
    assert got.traceback is not None
    cap = Limits().traceback
    assert len(got.traceback.encode()) <= cap
    assert got.traceback.startswith("Traceback (most recent call last):\n  File x\n")
    assert got.traceback.endswith(CUT_MARKER.format(total=len(traceback)))
    assert got.truncated == frozenset({"traceback"})
    # What was stored is searchable as stored.
    found = await store.search(SearchQuery(text="nul\\x00here"))
    assert [r.id for r in found.items] == ["bad\\x00id"]


async def test_every_capped_field_is_cut_with_a_marker(store_url: str, make_job: MakeJob) -> None:
    config = HistoryConfig(limits=Limits(arguments=100, result=64, error_message=80, name=64))
    async with await open_store(store_url, config) as store:
        await _write_oversized(store, make_job)


async def _write_oversized(store: HistoryStore, make_job: MakeJob) -> None:
    record = make_job(
        "x" * 100,
        queue="q",
        task="t" * 100,
        arguments="é" * 100,  # 200 bytes: cut on a character boundary
        result="r" * 65,
        error_message="m" * 81,
        group="g" * 65,
    )
    await store.write([record])
    page = await store.search(SearchQuery(queue="q"))
    [got] = page.items
    assert got.truncated == frozenset({"id", "task", "arguments", "result", "error_message", "group"})
    for value in (got.id, got.task, got.arguments, got.result, got.error_message, got.group):
        assert value is not None and "…[cut: " in value
        assert len(value.encode()) <= 100
    assert got.arguments is not None and got.arguments.startswith("é" * 10)
    # The same oversized record written again is recognised as the same record.
    assert (await store.write([record])).duplicates == 1


async def test_out_of_range_numbers_do_not_fail_a_batch(store: HistoryStore, make_job: MakeJob) -> None:
    await store.write([make_job("big", priority=10**12, attempts=1)])
    got = await store.get("q", "big")
    assert got is not None and got.priority == 2**31 - 1

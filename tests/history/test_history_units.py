"""The I/O-free parts: cleaning and capping text, records, queries and cursors."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.history import AttemptRecord, FinalState, JobRecord, SearchQuery
from conveyor.history.capping import CUT_MARKER, clean
from conveyor.history.query import from_micros, to_micros
from conveyor.history.sql import Dialect, build_search, fts5_phrase, like_pattern

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("plain", "plain"),
        ("café ☕", "café ☕"),
        (b"caf\xc3\xa9", "café"),
        (b"\xff\xfeok", "\\xff\\xfeok"),
        ("a\x00b", "a\\x00b"),
        (b"a\x00b", "a\\x00b"),
        ("lone \udc80 surrogate", "lone \\udc80 surrogate"),
        (bytearray(b"ba"), "ba"),
        (42, "42"),
    ],
)
def test_clean_makes_any_value_storable(value: object, expected: str | None) -> None:
    assert clean(value, 1024) == (expected, False)


def test_clean_cuts_to_the_cap_with_a_marker() -> None:
    text, cut = clean("x" * 1000, 100)
    assert cut and text is not None
    assert len(text.encode()) <= 100
    assert text.endswith(CUT_MARKER.format(total=1000))
    assert text.startswith("x" * 50)


def test_a_cut_never_splits_a_character() -> None:
    text, cut = clean("é" * 100, 101)  # 200 bytes; room for the marker leaves an odd count
    assert cut and text is not None
    body = text.split("…[cut")[0]
    assert set(body) == {"é"}
    assert len(text.encode()) <= 101


@given(st.one_of(st.text(), st.binary()), st.integers(min_value=64, max_value=300))
def test_clean_always_gives_valid_utf8_within_the_cap(value: str | bytes, cap: int) -> None:
    text, cut = clean(value, cap)
    assert text is not None
    data = text.encode()  # raises on a lone surrogate
    assert b"\x00" not in data
    assert len(data) <= cap
    whole, _ = clean(value, 10**9)
    if cut:
        assert re.search(r"…\[cut: \d+ bytes in all\]$", text)
        assert whole is not None and whole.startswith(text[: text.rindex("…[cut: ")])
    else:
        assert text == whole


def test_records_normalise_times_to_utc() -> None:
    paris = timezone(timedelta(hours=1))
    record = JobRecord(
        queue="q", id="j", task="t", state="failed", finished_at=datetime(2026, 3, 10, 13, 0, tzinfo=paris)
    )
    assert record.finished_at == T0 and record.finished_at.tzinfo == UTC
    assert record.state is FinalState.FAILED
    naive = JobRecord(queue="q", id="j", task="t", state="completed", finished_at=datetime(2026, 3, 10, 12))
    assert naive.finished_at == T0


def test_records_refuse_impossible_values() -> None:
    with pytest.raises(ValueError):
        JobRecord(queue="q", id="j", task="t", state="running", finished_at=T0)
    with pytest.raises(ValueError):
        JobRecord(queue="q", id="j", task="t", state="completed", finished_at=T0, attempts=-1)
    with pytest.raises(ValueError):
        AttemptRecord(0, "completed")
    with pytest.raises(ValueError):
        AttemptRecord(1, "exploded")


def test_durations_are_derived_from_the_times() -> None:
    record = JobRecord(
        queue="q",
        id="j",
        task="t",
        state="completed",
        finished_at=T0,
        enqueued_at=T0 - timedelta(seconds=10),
        started_at=T0 - timedelta(seconds=2),
        attempt_log=(AttemptRecord(1, "retried", started_at=T0 - timedelta(seconds=7)),),
    )
    assert record.derived_wait_ms() == 3000.0  # to the first attempt's start
    assert record.derived_run_ms() == 2000.0  # the last attempt's run
    never_ran = JobRecord(queue="q", id="j", task="t", state="expired", finished_at=T0, enqueued_at=T0)
    assert never_ran.derived_wait_ms() is None and never_ran.derived_run_ms() is None


def test_micros_round_trip_exactly() -> None:
    for value in (
        T0,
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ):
        assert from_micros(to_micros(value)) == value


@pytest.mark.parametrize(
    "kwargs",
    [
        {"limit": 0},
        {"limit": 1001},
        {"limit": True},
        {"text": ""},
        {"text": "   "},
        {"text": "x" * 201},
        {"text": "a\x00b"},
        {"queue": ""},
        {"id": "a\x00"},
        {"states": []},
        {"states": ["running"]},
        {"since": T0, "until": T0},
        {"cursor": "not a cursor"},
        {"cursor": "WzIsICJ4IiwgMSwgMV0"},  # a well-formed JSON of another version
    ],
)
def test_bad_searches_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SearchQuery(**kwargs)  # type: ignore[arg-type]


def test_a_cursor_round_trips() -> None:
    from conveyor.history.query import Cursor

    query = SearchQuery(task="t", states=["failed", "completed"], since=T0, limit=10)
    cursor = query.encode_cursor(Cursor(123, 456))
    assert query.next_page(cursor).position() == Cursor(123, 456)
    # The order states are given in does not change the filters.
    assert (
        SearchQuery(task="t", states=["completed", "failed"], since=T0, cursor=cursor).position() is not None
    )


def test_text_is_escaped_for_like_and_fts5() -> None:
    assert like_pattern("100%_a\\b") == "%100\\%\\_a\\\\b%"
    assert fts5_phrase('say "hi"') == '{error_message arguments} : "say ""hi"""'


def test_search_sql_passes_every_value_as_a_parameter() -> None:
    evil = "x'; DROP TABLE jobs; --"
    query = SearchQuery(id=evil, queue=evil, task=evil, group=evil, worker=evil, text=evil, states=["failed"])
    for dialect in (
        Dialect("postgres", "s.jobs", "s.attempts", "trigram"),
        Dialect("postgres", "s.jobs", "s.attempts", "fulltext"),
        Dialect("sqlite", "jobs", "attempts", "fts5", fts="jobs_fts"),
        Dialect("sqlite", "jobs", "attempts", "like", fts="jobs_fts"),
    ):
        sql, params = build_search(query, dialect)
        assert "DROP" not in sql
        assert sql.count(dialect.placeholder) == len(params)

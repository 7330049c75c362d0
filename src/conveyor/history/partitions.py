"""PostgreSQL's monthly partitions: names and bounds, no I/O.

Each of ``jobs`` and ``attempts`` is partitioned by final state (one list partition each,
made by the first migration), and each state's table by month of the job's ``finished_at``:
``jobs_completed_p202611`` holds the completed jobs that finished in November 2026 (UTC).
Bounds are written as text so that any year a datetime can hold has a partition (the one
after December 9999 would overflow a ``datetime``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime

from .records import FinalState

TABLES = ("jobs", "attempts")
Month = tuple[int, int]
_NAME = re.compile(r"^(jobs|attempts)_([a-z]+)_p(\d{4,5})(\d{2})$")
_STATES = frozenset(state.value for state in FinalState)


def month_of(value: datetime) -> Month:
    value = value.astimezone(UTC)
    return value.year, value.month


def next_month(month: Month) -> Month:
    year, m = month
    return (year + 1, 1) if m == 12 else (year, m + 1)


def months_between(first: Month, last: Month) -> Iterator[Month]:
    month = first
    while month <= last:
        yield month
        month = next_month(month)


def add_months(month: Month, n: int) -> Month:
    index = month[0] * 12 + (month[1] - 1) + n
    return index // 12, index % 12 + 1


def bound(month: Month) -> str:
    return f"{month[0]:04d}-{month[1]:02d}-01 00:00:00+00"


def name(table: str, state: FinalState, month: Month) -> str:
    return f"{table}_{state.value}_p{month[0]:04d}{month[1]:02d}"


def parse(relname: str) -> tuple[str, FinalState, Month] | None:
    match = _NAME.match(relname)
    if match is None or match.group(2) not in _STATES:
        return None
    return match.group(1), FinalState(match.group(2)), (int(match.group(3)), int(match.group(4)))


def ends_before(month: Month, cutoff: datetime) -> bool:
    """Whether every row the month's partition can hold finished before ``cutoff``."""
    year, m = next_month(month)
    if year > 9999:
        return False
    return datetime(year, m, 1, tzinfo=UTC) <= cutoff

"""What a caller asks the history: a search (filters, a keyset cursor, a limit) or stats.
Validated on construction, so a backend only ever sees a well-formed query. No I/O here."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from .records import FinalState, JobRecord, utc

MAX_LIMIT = 1000
MAX_TEXT = 200
MAX_BUCKETS = 50_000
BUCKET_SECONDS: Mapping[str, int] = {"minute": 60, "hour": 3600, "day": 86400}
Bucket = Literal["minute", "hour", "day"]
DEFAULT_PERCENTILES = (0.5, 0.9, 0.95, 0.99)


def to_micros(value: datetime) -> int:
    """Microseconds since the epoch: exact (no float rounding), as SQLite stores times."""
    delta = utc(value) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=value)


def _states(value: Iterable[FinalState | str] | FinalState | str | None) -> frozenset[FinalState] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    states = frozenset(FinalState(s) for s in value)
    if not states:
        raise ValueError("states, when given, must name at least one state")
    return states


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page ended: the last row's (finished_at, seq). Rows are ordered newest first
    by that pair, which is unique and never changes once written, so paging with it neither
    repeats nor skips rows while others are inserted (no OFFSET anywhere)."""

    finished_at_us: int
    seq: int


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """Filters (all optional, combined with AND), newest first, ``limit`` rows a page.

    ``since``/``until`` bound ``finished_at`` (since <= finished_at < until). ``worker``
    matches jobs any of whose attempts ran on that worker. ``text`` is searched in the error
    message and the arguments (as stored, i.e. capped): case-insensitive substring search,
    except on PostgreSQL without pg_trgm, where it matches whole words.
    """

    id: str | None = None
    queue: str | None = None
    task: str | None = None
    states: frozenset[FinalState] | None = None
    since: datetime | None = None
    until: datetime | None = None
    group: str | None = None
    worker: str | None = None
    text: str | None = None
    cursor: str | None = None
    """``Page.next_cursor`` of the previous page, for the same filters."""
    limit: int = 50

    def __init__(
        self,
        *,
        id: str | None = None,
        queue: str | None = None,
        task: str | None = None,
        states: Iterable[FinalState | str] | FinalState | str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        group: str | None = None,
        worker: str | None = None,
        text: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> None:
        set_ = object.__setattr__
        for name, value in (
            ("id", id),
            ("queue", queue),
            ("task", task),
            ("group", group),
            ("worker", worker),
        ):
            if value is not None and (not isinstance(value, str) or not value or "\x00" in value):
                raise ValueError(f"{name} must be a non-empty string without NUL")
            set_(self, name, value)
        set_(self, "states", _states(states))
        set_(self, "since", utc(since) if since is not None else None)
        set_(self, "until", utc(until) if until is not None else None)
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError("since must be before until")
        if text is not None:
            text = text.strip()
            if not text or len(text) > MAX_TEXT or "\x00" in text:
                raise ValueError(f"text must be 1 to {MAX_TEXT} characters, without NUL")
        set_(self, "text", text)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be an integer from 1 to {MAX_LIMIT}")
        set_(self, "limit", limit)
        set_(self, "cursor", cursor)
        if cursor is not None:
            self.position()  # refuse a malformed cursor now, not in the middle of a search

    def fingerprint(self) -> str:
        """Identifies the filters, so a cursor is not used with other filters than its own."""
        parts = [
            self.id,
            self.queue,
            self.task,
            sorted(self.states) if self.states else None,
            to_micros(self.since) if self.since else None,
            to_micros(self.until) if self.until else None,
            self.group,
            self.worker,
            self.text,
        ]
        return hashlib.blake2s(json.dumps(parts).encode(), digest_size=6).hexdigest()

    def position(self) -> Cursor | None:
        """The decoded cursor, or None for the first page."""
        if self.cursor is None:
            return None
        try:
            raw = base64.urlsafe_b64decode(self.cursor.encode("ascii") + b"==")
            version, fingerprint, finished, seq = json.loads(raw)
        except (ValueError, TypeError, UnicodeError, binascii.Error) as exc:
            raise ValueError("malformed cursor") from exc
        if version != 1 or not isinstance(finished, int) or not isinstance(seq, int):
            raise ValueError("malformed cursor")
        if fingerprint != self.fingerprint():
            raise ValueError("this cursor belongs to a search with other filters")
        return Cursor(finished, seq)

    def encode_cursor(self, position: Cursor) -> str:
        raw = json.dumps([1, self.fingerprint(), position.finished_at_us, position.seq]).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def next_page(self, cursor: str) -> SearchQuery:
        return SearchQuery(
            id=self.id,
            queue=self.queue,
            task=self.task,
            states=self.states,
            since=self.since,
            until=self.until,
            group=self.group,
            worker=self.worker,
            text=self.text,
            cursor=cursor,
            limit=self.limit,
        )


@dataclass(frozen=True, slots=True)
class Page:
    items: list[JobRecord]
    next_cursor: str | None
    """None on the last page."""


@dataclass(frozen=True, slots=True)
class StatsQuery:
    """Counts, failure rate and duration percentiles per time bucket, queue and task, for jobs
    that finished in ``[since, until)``. Buckets are aligned on UTC (whole minutes, hours,
    days); buckets without jobs are left out."""

    since: datetime
    until: datetime
    bucket: Bucket = "hour"
    queue: str | None = None
    task: str | None = None
    percentiles: tuple[float, ...] = DEFAULT_PERCENTILES

    def __post_init__(self) -> None:
        object.__setattr__(self, "since", utc(self.since))
        object.__setattr__(self, "until", utc(self.until))
        if self.since >= self.until:
            raise ValueError("since must be before until")
        if self.bucket not in BUCKET_SECONDS:
            raise ValueError(f"bucket must be one of {', '.join(BUCKET_SECONDS)}")
        if (self.until - self.since).total_seconds() / self.bucket_seconds > MAX_BUCKETS:
            raise ValueError(f"more than {MAX_BUCKETS} buckets: use a larger bucket or a shorter range")
        pcts = tuple(float(p) for p in self.percentiles)
        if not pcts or any(not 0.0 <= p <= 1.0 for p in pcts):
            raise ValueError("percentiles must be fractions between 0 and 1")
        object.__setattr__(self, "percentiles", pcts)
        for name in ("queue", "task"):
            value = getattr(self, name)
            if value is not None and (not value or "\x00" in value):
                raise ValueError(f"{name} must be a non-empty string without NUL")

    @property
    def bucket_seconds(self) -> int:
        return BUCKET_SECONDS[self.bucket]


@dataclass(frozen=True, slots=True)
class StatsRow:
    start: datetime
    """The start of the bucket (UTC)."""
    queue: str
    task: str
    counts: dict[FinalState, int]
    """Jobs that finished in the bucket, per final state (every state present, maybe 0)."""
    failure_rate: float | None
    """failed / (completed + failed); None when neither happened. Cancelled, expired and
    removed jobs say nothing about whether the task works, so they are left out."""
    wait_ms: dict[float, float | None] = field(default_factory=dict)
    """Percentile -> milliseconds from due to first start, over the jobs that started."""
    run_ms: dict[float, float | None] = field(default_factory=dict)
    """Percentile -> milliseconds the last attempt ran, over the jobs that ran."""

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def failure_rate(counts: Mapping[FinalState, int]) -> float | None:
    decided = counts.get(FinalState.COMPLETED, 0) + counts.get(FinalState.FAILED, 0)
    return counts.get(FinalState.FAILED, 0) / decided if decided else None

"""A queue's figures for monitoring: its state now, and what the whole fleet did with it.

The scripts that move jobs keep the counts and time histograms in Redis as they go (see
``scripts/include/metrics.lua``): totals since the queue began, and one set per minute for
a day. :func:`figures` reads them with the queue's state in one consistent snapshot, so the
API's ``/metrics``, ``conveyor metrics``, ``conveyor info --watch``, the dashboard and an
autoscaler all read one truth, whichever process asks and without Prometheus.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..metrics.buckets import BOUNDS_MS, BOUNDS_SECONDS, quantile
from .keys import QueueKeys
from .scripts import load
from .steps import Script, Step

FIGURES = load("figures")

OUTCOMES = ("completed", "failed", "retried", "cancelled")
"""What the scripts count: jobs completed, dead-lettered, sent to run again, cancelled."""

_BUCKETS = len(BOUNDS_SECONDS) + 1
_SLOTS = 8 + 2 * _BUCKETS


@dataclass(frozen=True, slots=True)
class Histogram:
    """Durations in the buckets of :data:`conveyor.metrics.buckets.BOUNDS_SECONDS`."""

    counts: tuple[int, ...] = (0,) * _BUCKETS
    """Per bucket (not cumulative); the last one holds what is past the last bound."""
    sum_seconds: float = 0.0

    @property
    def count(self) -> int:
        return sum(self.counts)

    def quantile(self, q: float) -> float | None:
        """Estimated ``q`` quantile (0..1) in seconds; None without observations."""
        return quantile(self.counts, q)

    @property
    def mean(self) -> float | None:
        return self.sum_seconds / self.count if self.count else None

    def __add__(self, other: Histogram) -> Histogram:
        return Histogram(
            tuple(a + b for a, b in zip(self.counts, other.counts, strict=True)),
            self.sum_seconds + other.sum_seconds,
        )


@dataclass(frozen=True, slots=True)
class Period:
    """What happened to a queue's jobs over a period (a minute, a window, all time)."""

    completed: int = 0
    failed: int = 0
    """Dead-lettered: failed for good."""
    retried: int = 0
    cancelled: int = 0
    wait: Histogram = field(default_factory=Histogram)
    """From enqueued (or due, or handed back) to started."""
    run: Histogram = field(default_factory=Histogram)
    """From started to the outcome recorded."""

    def __add__(self, other: Period) -> Period:
        return Period(
            self.completed + other.completed,
            self.failed + other.failed,
            self.retried + other.retried,
            self.cancelled + other.cancelled,
            self.wait + other.wait,
            self.run + other.run,
        )

    @classmethod
    def parse(cls, counters: Sequence[Any]) -> Period:
        """From the counters the scripts keep (their slots: see include/metrics.lua); an
        empty sequence where nothing was counted."""
        if not counters:
            return cls()
        c = [int(value) for value in counters]
        if len(c) != _SLOTS:
            raise ValueError(f"{_SLOTS} counters expected, not {len(c)}")
        waits, runs = c[8 : 8 + _BUCKETS], c[8 + _BUCKETS : 8 + 2 * _BUCKETS]
        return cls(
            c[0], c[1], c[2], c[3], Histogram(tuple(waits), c[5] / 1000), Histogram(tuple(runs), c[7] / 1000)
        )


_WAIT_COUNT, _RUN_COUNT = 4, 6  # each followed by its sum (ms); see include/metrics.lua
_WAIT_BUCKETS, _RUN_BUCKETS = 8, 8 + _BUCKETS


class Tally:
    """Wait and run times a worker measured for one queue since its last acknowledgement
    there, in the counters the scripts keep: :meth:`take` gives them to the next
    ``complete`` or ``fail``, which adds them to the queue's figures in the same step.
    Measured in the worker and added up per batch, they cost the scripts nothing per job.
    """

    __slots__ = ("_runs", "_waits", "run_ms", "wait_ms")

    def __init__(self) -> None:
        self._waits = [0] * _BUCKETS
        self._runs = [0] * _BUCKETS
        self.wait_ms = 0
        self.run_ms = 0

    def waited(self, ms: int) -> None:
        if ms < 0:  # the ready time of a job another clock wrote, a little ahead
            ms = 0
        self._waits[bisect_left(BOUNDS_MS, ms)] += 1
        self.wait_ms += ms

    def ran(self, seconds: float) -> None:
        ms = seconds * 1000
        self._runs[bisect_left(BOUNDS_MS, ms)] += 1
        self.run_ms += round(ms)

    def take(self) -> list[int]:
        """The counts as flat (slot, increment) pairs, and start again from zero."""
        flat: list[int] = []
        for base, count_slot, counts, total in (
            (_WAIT_BUCKETS, _WAIT_COUNT, self._waits, self.wait_ms),
            (_RUN_BUCKETS, _RUN_COUNT, self._runs, self.run_ms),
        ):
            observed = 0
            for index, count in enumerate(counts):
                if count:
                    flat += (base + index, count)
                    observed += count
                    counts[index] = 0
            if observed:
                flat += (count_slot, observed, count_slot + 1, total)
        self.wait_ms = self.run_ms = 0
        return flat


@dataclass(frozen=True, slots=True)
class QueueFigures:
    """One queue's state at ``now_ms`` and its figures, as :func:`figures` read them."""

    queue: str
    now_ms: int
    counts: dict[str, int]
    """Jobs per state, as ``client.counts`` gives them."""
    suspects: int
    delayed_due: int
    """Delayed jobs already due that no claim has promoted yet (they wait, too)."""
    oldest_waiting_s: float
    """How long the job waiting longest has waited (0 when none waits). Exact for plain and
    prioritized lines; for grouped jobs, from the first groups of the ring."""
    paused: bool
    concurrency: int | None
    rate_max: int | None
    rate_window_s: float | None
    totals: Period
    """Since the queue began (Prometheus counters and histograms)."""
    minutes: list[tuple[int, Period]]
    """``(minute, figures)``, oldest first, the last one being the current (still filling)
    minute; minute = ms since the epoch // 60,000."""

    def window(self, minutes: int) -> Period:
        """The figures of the last ``minutes`` whole minutes plus the current one."""
        recent = self.minutes[-(minutes + 1) :]
        total = Period()
        for _, period in recent:
            total = total + period
        return total

    def rate_per_minute(self, outcome: str, minutes: int = 5) -> float:
        """Jobs per minute with ``outcome`` (one of :data:`OUTCOMES`), over the last
        ``minutes`` whole minutes and the part of the current one that has passed."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, not {outcome!r}")
        spanned = min(minutes, len(self.minutes) - 1) + (self.now_ms % 60_000) / 60_000
        if spanned <= 0:
            return 0.0
        count: int = getattr(self.window(minutes), outcome)
        return count / spanned


def figures(keys: QueueKeys, minutes: int = 60) -> Generator[Step, Any, QueueFigures]:
    """The queue's state and figures, with the last ``minutes`` minutes (at most a day)."""
    if not 0 <= minutes <= 1440:
        raise ValueError("minutes must be between 0 and 1440 (the figures are kept for a day)")
    reply = yield Script(FIGURES, keys.for_figures, (minutes,))
    now = int(reply[0])
    waiting, delayed, active, completed, failed, cancelled, children = (int(v) for v in reply[1:8])
    oldest = int(reply[10])
    concurrency, rate_max, rate_ms = int(reply[12]), int(reply[13]), int(reply[14])
    first_minute = int(reply[16])
    return QueueFigures(
        queue=keys.queue,
        now_ms=now,
        counts={
            "waiting": waiting,
            "delayed": delayed,
            "active": active,
            "completed": completed,
            "failed": failed,
            "cancelled": cancelled,
            "waiting_children": children,
        },
        suspects=int(reply[8]),
        delayed_due=int(reply[9]),
        oldest_waiting_s=max(0.0, (now - oldest) / 1000) if oldest >= 0 else 0.0,
        paused=reply[11] == 1,
        concurrency=concurrency if concurrency >= 0 else None,
        rate_max=rate_max if rate_max >= 0 else None,
        rate_window_s=rate_ms / 1000 if rate_max >= 0 else None,
        totals=Period.parse(reply[15]),
        minutes=[(first_minute + i, Period.parse(flat)) for i, flat in enumerate(reply[17:])],
    )

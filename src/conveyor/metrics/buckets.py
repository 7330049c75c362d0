"""The one set of histogram buckets Conveyor uses for time: wait and run, fleet and worker.

Log-scale from 1 ms to an hour (1, 2.5, 5 per decade), the same bounds in the Lua scripts
that keep the fleet's figures in Redis (``ops/scripts/include/metrics.lua``, in ms), in each
worker's own histograms and in Prometheus, so that every view adds up the same buckets.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

BOUNDS_SECONDS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1, 2.5, 5, 10, 25, 60, 120, 300, 600, 1800, 3600,
)  # fmt: skip
"""Upper bounds (inclusive, as Prometheus' ``le``); one more bucket holds what is longer."""

BOUNDS_MS: tuple[float, ...] = tuple(bound * 1000 for bound in BOUNDS_SECONDS)


def bucket_of(seconds: float) -> int:
    """The index of the bucket a duration falls in (``len(BOUNDS_SECONDS)``: past the last)."""
    return bisect_left(BOUNDS_SECONDS, seconds)


def quantile(counts: Sequence[float], q: float) -> float | None:
    """Estimate the ``q`` quantile (0..1) in seconds from per-bucket counts, interpolating
    linearly inside the bucket as Prometheus' ``histogram_quantile`` does; past the last
    bound, the last bound. None without observations."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    running = 0.0
    for index, count in enumerate(counts):
        if count and running + count >= rank:
            if index >= len(BOUNDS_SECONDS):
                return BOUNDS_SECONDS[-1]
            lower = BOUNDS_SECONDS[index - 1] if index else 0.0
            upper = BOUNDS_SECONDS[index]
            return lower + (upper - lower) * (rank - running) / count
        running += count
    return BOUNDS_SECONDS[-1]

"""Percentiles computed in Python, for the SQLite backend (which has no percentile function).

:func:`percentile_cont` follows PostgreSQL's ``percentile_cont`` exactly (linear
interpolation between the two nearest ranks), so both backends report the same numbers for the
same data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile_cont(ordered: Sequence[float], fraction: float) -> float | None:
    """The ``fraction`` percentile of ``ordered`` (sorted ascending); None when empty."""
    if not ordered:
        return None
    position = fraction * (len(ordered) - 1)
    lower = math.floor(position)
    upper = math.ceil(position)
    first = ordered[lower]
    if upper == lower:
        return first
    return first + (ordered[upper] - first) * (position - lower)

"""The Prometheus text exposition format (version 0.0.4), written by Conveyor itself.

Every figure Conveyor exports -- the fleet's, read from Redis on each scrape, and a worker
process's own -- is a :class:`Family` of samples rendered here. Conveyor counts in plain
Python on its hot paths (an increment per batch, not a lock per job) and only formats text
when Prometheus asks, so it needs no client library's registry or locks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Kind = Literal["counter", "gauge", "histogram"]
Labels = tuple[tuple[str, str], ...]


@dataclass
class Family:
    """One metric: its name, type, help text and samples (suffix, labels, value).

    A counter's samples carry the suffix ``_total``; a histogram's ``_bucket``, ``_sum``
    and ``_count`` (see :meth:`histogram`)."""

    name: str
    kind: Kind
    help: str
    samples: list[tuple[str, Labels, float]] = field(default_factory=list)

    def add(self, value: float, labels: Labels = (), suffix: str | None = None) -> None:
        if suffix is None:
            suffix = "_total" if self.kind == "counter" else ""
        self.samples.append((suffix, labels, value))

    def histogram(
        self, bounds: Sequence[float], counts: Sequence[float], total: float, labels: Labels = ()
    ) -> None:
        """Add one histogram from per-bucket counts (``counts[i]``: observations at or below
        ``bounds[i]`` and above the bound before; one more count past the last bound)."""
        if len(counts) != len(bounds) + 1:
            raise ValueError(f"{len(bounds)} bounds need {len(bounds) + 1} counts, not {len(counts)}")
        running = 0.0
        for bound, count in zip((*bounds, math.inf), counts, strict=True):
            running += count
            self.samples.append(("_bucket", (*labels, ("le", format_value(bound))), running))
        self.samples.append(("_sum", labels, total))
        self.samples.append(("_count", labels, running))


def format_value(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def render(families: Iterable[Family]) -> str:
    """The text Prometheus scrapes. Families without samples are left out."""
    lines: list[str] = []
    for family in families:
        if not family.samples:
            continue
        # In the 0.0.4 text format a counter's HELP and TYPE name its samples, ``_total``
        # included (promtool rejects them otherwise); OpenMetrics would drop the suffix.
        header = family.name
        if family.kind == "counter" and not header.endswith("_total"):
            header += "_total"
        lines.append(f"# HELP {header} {_escape_help(family.help)}")
        lines.append(f"# TYPE {header} {family.kind}")
        for suffix, labels, value in family.samples:
            if labels:
                text = ",".join(f'{key}="{_escape_label(str(val))}"' for key, val in labels)
                lines.append(f"{family.name}{suffix}{{{text}}} {format_value(value)}")
            else:
                lines.append(f"{family.name}{suffix} {format_value(value)}")
    return "\n".join(lines) + "\n" if lines else ""


class LabelCap:
    """Bounds a label's cardinality: the first ``limit`` values are kept as they are, any
    later one is reported as ``other`` (task names are bounded by the code that defines
    them, but a typo in an enqueue from another language must not grow the series forever)."""

    OTHER = "other"

    def __init__(self, limit: int = 100) -> None:
        self.limit = limit
        self._known: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._known:
            return value
        if len(self._known) < self.limit:
            self._known.add(value)
            return value
        return self.OTHER

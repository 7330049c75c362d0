"""Retry delays. A policy maps the attempt that just failed (1-based) to a delay in seconds.

Built-in policies are plain data so they can travel inside a job's options; a custom
policy is any callable ``(attempt, exception) -> seconds`` given to the task decorator.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Exponential:
    """``base * factor ** (attempt - 1)`` seconds, capped at ``maximum``, with full jitter by default.

    Full jitter (a uniform draw between 0 and the computed delay) spreads retries of jobs
    that failed together, so a recovering downstream service is not hit all at once.
    """

    base: float = 1.0
    factor: float = 2.0
    maximum: float = 600.0
    jitter: bool = True

    def delay(self, attempt: int, error: BaseException | None = None) -> float:
        value = min(self.maximum, self.base * self.factor ** max(0, attempt - 1))
        return random.uniform(0, value) if self.jitter else value

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "exponential",
            "base": self.base,
            "factor": self.factor,
            "maximum": self.maximum,
            "jitter": self.jitter,
        }


@dataclass(frozen=True, slots=True)
class Fixed:
    """The same delay before every retry."""

    seconds: float = 0.0

    def delay(self, attempt: int, error: BaseException | None = None) -> float:
        return self.seconds

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "fixed", "seconds": self.seconds}


@dataclass(frozen=True, slots=True)
class Custom:
    """A user function ``(attempt, exception) -> seconds``; lives in the worker, not in the job."""

    function: Callable[[int, BaseException | None], float]

    def delay(self, attempt: int, error: BaseException | None = None) -> float:
        return float(self.function(attempt, error))


Backoff = Exponential | Fixed | Custom


def from_dict(data: dict[str, Any]) -> Exponential | Fixed:
    kind = data.get("kind")
    if kind == "exponential":
        return Exponential(
            base=float(data.get("base", 1.0)),
            factor=float(data.get("factor", 2.0)),
            maximum=float(data.get("maximum", 600.0)),
            jitter=bool(data.get("jitter", True)),
        )
    if kind == "fixed":
        return Fixed(float(data.get("seconds", 0.0)))
    raise ValueError(f"unknown backoff kind {kind!r}; expected 'exponential' or 'fixed'")


def coerce(value: Backoff | float | int | Callable[[int, BaseException | None], float]) -> Backoff:
    """Accept a policy, a number of seconds (fixed) or a function (custom)."""
    if isinstance(value, Exponential | Fixed | Custom):
        return value
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("backoff seconds must not be negative")
        return Fixed(float(value))
    if callable(value):
        return Custom(value)
    raise TypeError(f"backoff must be a policy, a number of seconds or a function, not {value!r}")

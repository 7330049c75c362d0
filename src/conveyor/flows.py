"""Flows: jobs that run only after other jobs finished.

A :class:`Flow` is a parent job and its children (jobs, or flows of their own). The parent
waits in the ``waiting_children`` state until every child finished, then runs with their
outcomes at hand (``current_job().children``). Children may live on other queues.
:func:`chain` (a → b → c, each step receiving the previous result) and :func:`chord` (a
group of jobs, then a callback receiving all their results) are flows too.

How a flow is written and kept atomic is in :mod:`conveyor.ops.flows`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from .task import TaskCall


@dataclass(frozen=True, slots=True)
class Flow:
    """A parent job that runs after all its children finished.

    ``on_child_failure="fail"`` (the default) fails the parent as soon as a child is
    dead-lettered, cancelled or removed; ``"ignore"`` runs it anyway, with the failures in
    ``current_job().children``. ``pass_results=True`` also passes the children's results as
    the first argument: the one result for a single child, a list for several (None where
    a child failed); ``pass_results="list"`` always passes a list (what :func:`chord` does,
    so that a chord of one still hands its callback a list).
    """

    job: TaskCall[Any]
    children: Sequence[TaskCall[Any] | Flow]
    on_child_failure: FailurePolicy = "fail"
    pass_results: bool | Literal["list"] = False

    def __post_init__(self) -> None:
        if not self.children:
            raise ValueError("a flow needs at least one child")
        if self.on_child_failure not in ("fail", "ignore"):
            raise ValueError("on_child_failure must be 'fail' or 'ignore'")


def chain(*steps: TaskCall[Any]) -> Flow:
    """``chain(a.call(1), b.call(), c.call())``: b runs after a and receives a's result as its
    first argument, then c receives b's. A failed step fails the steps after it."""
    if len(steps) < 2:
        raise ValueError("a chain needs at least two steps")
    flow: TaskCall[Any] | Flow = steps[0]
    for step in steps[1:]:
        flow = Flow(step, [flow], pass_results=True)
    assert isinstance(flow, Flow)
    return flow


def chord(
    group: Sequence[TaskCall[Any] | Flow], callback: TaskCall[Any], on_child_failure: FailurePolicy = "fail"
) -> Flow:
    """Run ``group`` (in parallel, on any workers), then ``callback`` with the list of their
    results as its first argument, in the order of ``group``."""
    return Flow(callback, list(group), on_child_failure=on_child_failure, pass_results="list")


@dataclass(frozen=True, slots=True)
class ChildOutcome:
    """How one child of a flow ended, as its parent sees it."""

    queue: str
    id: str
    state: Literal["completed", "failed", "cancelled"]
    result: Any = None
    error: dict[str, Any] | None = None


H = TypeVar("H")

FailurePolicy = Literal["fail", "ignore"]


@dataclass(frozen=True, slots=True)
class FlowHandle(Generic[H]):
    """What enqueueing a flow returns: the parent's handle and its children's, in order."""

    job: H
    children: list[H | FlowHandle[H]] = field(default_factory=list)

"""Writing flows and delivering their children's outcomes to parents.

How it stays atomic without cross-slot scripts: every job of a flow is created by one
enqueue call per queue, parents before children, with ids chosen up front. A flow within
one queue is one script call. A flow across queues is first written as a record in the
root queue (``flows``), which a worker's sweep replays if the creator died half-way
(creating a job twice is impossible: its id already exists). When a child finishes, its
script leaves a note in its own queue's outbox in the same atomic step; a worker delivers
the note to the parent's queue (``child.lua``, idempotent) and then deletes it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .. import serialization
from ..flows import ChildOutcome, Flow, FlowHandle
from ..task import TaskCall
from .encode import flow_fields
from .enqueue import NewJob, enqueue
from .keys import QueueKeys, validate_queue_name
from .scripts import load
from .steps import Command, Retention, Script, Step, as_dict

CHILD = load("child")


log = logging.getLogger("conveyor.flows")


MISSING_PARENT_GRACE_MS = 10 * 60 * 1000
"""A note whose parent does not exist yet is kept this long: in a flow across queues the
parent's queue may be written after the child's (and a crashed creator is replayed)."""


STALE_FLOW_RECORD_MS = 60 * 1000
"""A flow record older than this belongs to a creator that died half-way: replay it."""


@dataclass(slots=True)
class FlowPlan:
    """Flows laid out as jobs to write, parents before their children."""

    nodes: list[tuple[str, NewJob]] = field(default_factory=list)
    """(queue, job) pairs in write order."""
    shapes: list[Any] = field(default_factory=list)
    """Per flow: (index of the parent in ``nodes``, [child shapes]); a plain child is an index."""
    spanning: dict[str, dict[str, list[tuple[str, NewJob]]]] = field(default_factory=dict)
    """Flows whose jobs live on several queues: root queue -> root id -> its jobs."""

    def handles(self, results: Sequence[Any], make: Any) -> list[FlowHandle[Any]]:
        def build(shape: Any) -> Any:
            if isinstance(shape, int):
                return make(results[shape])
            index, children = shape
            return FlowHandle(make(results[index]), [build(child) for child in children])

        return [build(shape) for shape in self.shapes]


def size(item: TaskCall[Any] | Flow) -> int:
    """Number of jobs in a flow (1 for a plain job)."""
    return 1 + sum(size(child) for child in item.children) if isinstance(item, Flow) else 1


def plan_flows(flows: Sequence[Flow], ids: Any, encode: Any) -> FlowPlan:
    """Lay out ``flows``: ``ids`` yields fresh job ids, ``encode(call, id)`` makes a NewJob
    (:func:`~conveyor.ops.encode.encode_job`), to which the flow's fields are added."""
    plan = FlowPlan()
    slots: list[tuple[str, NewJob] | None] = []

    def lay_out(item: TaskCall[Any] | Flow, parent: tuple[str, str] | None) -> Any:
        call = item.job if isinstance(item, Flow) else item
        job_id = call.options.job_id or next(ids)
        index = len(slots)
        slots.append(None)  # the parent's place comes before its children's
        shape: Any = index
        refs: list[tuple[str, str]] = []
        if isinstance(item, Flow):
            child_shapes = [lay_out(child, (call.queue, job_id)) for child in item.children]
            for child in child_shapes:
                queue, job = slots[child if isinstance(child, int) else child[0]]  # type: ignore[misc]
                refs.append((queue, job.id))
            shape = (index, child_shapes)
        job = encode(call, job_id)
        extras = flow_fields(parent, refs, item if isinstance(item, Flow) else None)
        slots[index] = (call.queue, NewJob(job.id, job.task, job.args, job.extras + extras))
        return shape

    for flow in flows:
        start = len(slots)
        plan.shapes.append(lay_out(flow, None))
        nodes = slots[start:]
        if len({queue for queue, _ in nodes}) > 1:  # type: ignore[misc]
            root_queue, root = nodes[0]  # type: ignore[misc]
            plan.spanning.setdefault(root_queue, {})[root.id] = nodes  # type: ignore[assignment]
    plan.nodes = slots  # type: ignore[assignment]
    return plan


def write_flows(prefix: str, plan: FlowPlan) -> Generator[Step, Any, list[Any]]:
    """Write planned flows: records of flows across queues first, then the jobs, one
    enqueue call per queue (a flow within one queue is created by one script call)."""
    for root_queue, records in plan.spanning.items():
        yield from record_ops(QueueKeys(root_queue, prefix), records)
    results = yield from write_plan(prefix, plan.nodes)
    for root_queue, records in plan.spanning.items():
        yield Command(("HDEL", QueueKeys(root_queue, prefix).flows, *records))
    return results


def write_plan(prefix: str, nodes: Sequence[tuple[str, NewJob]]) -> Generator[Step, Any, list[Any]]:
    """Write jobs, one enqueue call per queue, in order: parents before their children.

    Not split into chunks: a chunk boundary could cut a flow in two."""
    by_queue: dict[str, list[tuple[int, NewJob]]] = {}
    for index, (queue, job) in enumerate(nodes):
        by_queue.setdefault(queue, []).append((index, job))
    results: list[Any] = [None] * len(nodes)
    for queue, items in by_queue.items():
        done = yield from enqueue(QueueKeys(queue, prefix), [job for _, job in items])
        for (index, _), outcome in zip(items, done, strict=True):
            results[index] = outcome
    return results


def record_ops(root: QueueKeys, records: dict[str, list[tuple[str, NewJob]]]) -> Generator[Step, Any, None]:
    """Write the record of flows that span queues, before any of their jobs."""
    items: list[Any] = []
    now = int(time.time() * 1000)
    for flow_id, nodes in records.items():
        encoded = [[queue, job.id, job.task, job.args.decode(), list(job.extras)] for queue, job in nodes]
        items += (flow_id, serialization.dumps({"t": now, "nodes": encoded}))
    yield Command(("HSET", root.flows, *items))


def replay_stale(keys: QueueKeys, older_than_ms: int = STALE_FLOW_RECORD_MS) -> Generator[Step, Any, int]:
    """Finish creating flows whose creator died half-way; returns how many were replayed."""
    reply = yield Command(("HGETALL", keys.flows))
    now = int(time.time() * 1000)
    replayed = 0
    for flow_id, raw in as_dict(reply).items():
        try:
            record = serialization.loads(raw)
            if now - int(record["t"]) < older_than_ms:
                continue
            nodes = [
                (validate_queue_name(queue), NewJob(job_id, task, args.encode(), tuple(extras)))
                for queue, job_id, task, args, extras in record["nodes"]
            ]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.error("dropped a malformed flow record %s of %s (%s)", flow_id, keys.queue, exc)
            yield Command(("HDEL", keys.flows, flow_id))
            continue
        yield from write_plan(keys.prefix, nodes)
        yield Command(("HDEL", keys.flows, flow_id))
        replayed += 1
    return replayed


def child_finished(
    parent: QueueKeys, parent_id: str, child_ref: str, kind: str, payload: str | bytes, failed: Retention
) -> Generator[Step, Any, str]:
    reply = yield Script(
        CHILD,
        parent.for_child,
        (parent_id, child_ref, kind, payload, failed.keep_count, failed.keep_ms),
    )
    return str(reply)


def drain_outbox(keys: QueueKeys, failed: Retention, batch: int = 100) -> Generator[Step, Any, int]:
    """Deliver the notes of finished children of this queue to their parents; returns how many.

    Safe to run from many workers at once: delivery is idempotent, and a note is deleted
    only after it was delivered.
    """
    delivered = 0
    while True:
        notes = yield Command(("LRANGE", keys.outbox, 0, batch - 1))
        if not notes:
            return delivered
        kept = 0
        now = int(time.time() * 1000)
        for raw in notes:
            try:
                note = serialization.loads(raw)
                parent_queue, _, parent_id = str(note["pa"]).partition(" ")
                parent = QueueKeys(validate_queue_name(parent_queue), keys.prefix)
                child_ref, kind, value, written = (
                    f"{keys.queue} {note['id']}",
                    note["k"],
                    note["v"],
                    note["t"],
                )
            except (ValueError, KeyError, TypeError) as exc:
                # Not written by Conveyor: it can never be delivered, so it must not block the rest.
                log.error("dropped a malformed note from the outbox of %s (%s): %.200r", keys.queue, exc, raw)
                yield Command(("LREM", keys.outbox, 1, raw))
                continue
            outcome = yield from child_finished(parent, parent_id, child_ref, kind, value, failed)
            if outcome == "missing" and now - int(written) < MISSING_PARENT_GRACE_MS:
                kept += 1  # its parent is still being written (a flow across queues)
                continue
            yield Command(("LREM", keys.outbox, 1, raw))
            delivered += 1
            if outcome == "failed+":  # the parent failed and is a child itself: tell its parent
                delivered += yield from drain_outbox(parent, failed, batch)
        if kept == len(notes):
            return delivered


def parse_children(raw: str | bytes) -> tuple[bool | str, list[ChildOutcome]]:
    """Decode a parent's ``co`` field: (pass results as an argument? -- False, True, or
    ``"list"`` for always a list --, outcomes in order)."""
    data = serialization.loads(raw)
    outcomes = []
    for ref, kind, value in data["children"]:
        queue, _, job_id = str(ref).partition(" ")
        if kind == "c":
            outcomes.append(ChildOutcome(queue, job_id, "completed", result=value))
        else:
            state: Literal["failed", "cancelled"] = "failed" if kind == "f" else "cancelled"
            outcomes.append(
                ChildOutcome(queue, job_id, state, error=value if isinstance(value, dict) else None)
            )
    passed = data.get("pass")
    return ("list" if passed == "list" else bool(passed)), outcomes

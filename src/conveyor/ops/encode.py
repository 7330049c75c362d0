"""The enqueue argument contract, written once: a task call as the fields of a new job.

Every job that enters Redis is encoded here, whoever makes it: the client (one enqueue or
a bulk), a flow (:mod:`.flows`, which adds the flow fields below), a schedule's tick
(:mod:`.schedules`) and, through the client, the HTTP API. A job goes to the scripts as
its id, task name and arguments JSON, then optional fields as a flat name/value sequence
(``NewJob.extras``), most of which ``create_job`` (``scripts/include/jobs.lua``) stores in
the job hash under the same name. The names, here and in the job hash, are spelled out in
one legend: the header of ``scripts/include/common.lua``.

The encoder runs once per job of a bulk enqueue, so it stays one flat function: no object
but the :class:`NewJob` for a job without options.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .. import serialization
from ..task import DEFAULT_OPTIONS, EnqueueOptions, TaskCall
from .enqueue import NewJob
from .ids import validate_job_id

if TYPE_CHECKING:
    from ..flows import Flow


def _dedup_fields(options: EnqueueOptions) -> tuple[Any, ...]:
    window = math.ceil((options.dedup_window or 0) * 1000)
    fields: tuple[Any, ...] = ("du", options.dedup, "dw", window)
    if options.debounce:
        fields += ("db", 1)
        if not options.delay and options.run_at is None:
            fields += ("w", f"+{window}")  # a debounced job waits out its quiet period
    return fields


def encode_job(call: TaskCall[Any], job_id: str, limit: int | None) -> NewJob:
    """``call`` as a job to write under ``job_id`` (or the call's own ``job_id`` option).

    Raises ``SerializationError`` or ``PayloadTooLarge`` (over ``limit`` bytes of arguments,
    or of keyword arguments) before anything is written.
    """
    args = serialization.dumps(call.args, what=f"arguments of {call.task}", limit=limit)
    options = call.options
    if options is DEFAULT_OPTIONS and not call.kwargs and not call.priority:
        return NewJob(job_id, call.task, args)  # the common case, kept cheap for bulk
    extras: list[Any] = []
    if call.kwargs:
        extras += (
            "k",
            serialization.dumps(call.kwargs, what=f"keyword arguments of {call.task}", limit=limit),
        )
    stored = options.stored()
    if stored:
        extras += ("o", serialization.dumps(stored))
    if call.priority:
        extras += ("p", call.priority)
    if options.run_at is not None:
        extras += ("w", f"@{math.ceil(options.run_at.timestamp() * 1000)}")
    elif options.delay:
        extras += ("w", f"+{math.ceil(options.delay * 1000)}")
    if options.ttl is not None:
        extras += ("x", math.ceil(options.ttl * 1000))
    if options.dedup is not None:
        extras += _dedup_fields(options)
    if options.group is not None:
        extras += ("g", options.group)
    if options.job_id is not None:
        # with_options checks it; an EnqueueOptions built by hand (the CLI, bulk callers) has
        # not been, and an id no URL can address must not be written.
        job_id = validate_job_id(options.job_id)
    return NewJob(job_id, call.task, args, tuple(extras))


def flow_fields(
    parent: tuple[str, str] | None, children: Sequence[tuple[str, str]] | None, flow: Flow | None
) -> tuple[Any, ...]:
    """The fields that make a job part of a flow, added to its own: its ``parent`` (queue,
    id), and for the parent of ``flow`` its ``children`` (queue, id) and the flow's policy."""
    extras: tuple[Any, ...] = ()
    if parent is not None:
        extras += ("pa", f"{parent[0]} {parent[1]}")
    if children and flow is not None:
        refs = [f"{queue} {job_id}" for queue, job_id in children]
        extras += ("dp", len(refs), "ch", serialization.dumps(refs).decode())
        if flow.on_child_failure == "ignore":
            extras += ("fp", "ignore")
        if flow.pass_results:
            extras += ("pr", 2 if flow.pass_results == "list" else 1)
    return extras

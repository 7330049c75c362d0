"""What both client faces share: key layouts, how an enqueue is written (bulk chunks, ids,
the garbage collector held off, tracing), and the operations each face hands to its executor.

See :mod:`conveyor.client` for the faces themselves.
"""

from __future__ import annotations

import gc
import os
import socket
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from operator import attrgetter
from typing import TYPE_CHECKING, Any, TypeVar

from . import ops, tracing
from .config import Settings
from .errors import JobNotFound, ResultTimeout
from .flows import Flow
from .job import EnqueueOutcome, Job
from .ops import flows as flow_ops
from .ops.encode import encode_job
from .ops.ids import new_job_ids
from .ops.keys import QueueKeys, queues_key, validate_queue_name
from .ops.scripts import LuaScript, load, names
from .task import TaskCall

if TYPE_CHECKING:
    pass


T = TypeVar("T")


_outcome = attrgetter("outcome")
CANCELLED_RETENTION = ops.Retention(100_000, 7 * 24 * 3600 * 1000)

BULK_CHUNK = 250
"""Jobs per enqueue script call in a bulk enqueue. The chunks go out pipelined, each as soon
as it is built, so Redis writes one chunk while the next is prepared: smaller chunks overlap
more of the two, larger ones pay the script's fixed cost (about 10 us) less often. No call
holds Redis for more than about 1.5 ms."""


def _with_ids(jobs: list[ops.NewJob]) -> list[ops.NewJob]:
    """Give a generated id to each job of a chunk that has none (the caller chose no job_id).

    Done chunk by chunk as the chunks are sent, so making the ids of the next chunk
    overlaps with Redis writing this one.
    """
    missing = [job for job in jobs if not job.id]
    for job, job_id in zip(missing, new_job_ids(len(missing)), strict=True):
        job.id = job_id
    return jobs


@contextmanager
def gc_paused() -> Iterator[None]:
    """Hold off the cyclic garbage collector while a bulk makes its thousands of small objects.

    Each of them counts towards the collector's next run, so encoding 1,000 jobs triggered
    several collections, and now and then a full one over every object of the process:
    about a fifth of a bulk enqueue's CPU time, for no garbage (none of them forms a cycle;
    reference counting frees them). Paused only when it was running, so concurrent bulks
    and an application that turned it off leave it as they found it.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class Producer:
    """What both faces share: settings, key names and the building of operations."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._keys: dict[str, QueueKeys] = {}
        self._known_queues: set[str] = set()
        tracing.from_env()  # CONVEYOR_TRACING=1 turns tracing on for the process

    def keys(self, queue: str) -> QueueKeys:
        keys = self._keys.get(queue)
        if keys is None:
            keys = self._keys[queue] = QueueKeys(validate_queue_name(queue), self.settings.prefix)
        return keys

    def _encode(self, call: TaskCall[Any], job_id: str) -> ops.NewJob:
        """The encoder a flow's plan is given; an enqueue calls ``encode_job`` itself, one
        layer fewer per job of a bulk."""
        return encode_job(call, job_id, self.settings.max_payload_bytes)

    def _enqueue_ops(self, calls: Sequence[TaskCall[Any]]) -> Generator[ops.Step, Any, list[ops.Enqueued]]:
        """The enqueue of ``calls``; while tracing is on, in a producer span whose context
        each job carries (see :mod:`conveyor.tracing`)."""
        if tracing.active is None:
            return self._enqueue_calls(calls)
        return tracing.active.enqueue(calls, self._enqueue_calls)

    def _enqueue_calls(self, calls: Sequence[TaskCall[Any]]) -> Generator[ops.Step, Any, list[ops.Enqueued]]:
        results = yield from self._write_calls(calls)
        # A generated id can already exist for two reasons. If that job has the same task and
        # arguments, it is this enqueue's own: a retry below us (redis-py re-sends a command
        # whose reply was lost) ran the script twice, and the job was created once. Otherwise
        # it belongs to another producer's job (same millisecond, counter and 20 random
        # bits: rare, yet bound to happen in a large fleet); the caller did not choose that
        # id, so make the job under a new one rather than report "existed" and drop it.
        while True:
            if EnqueueOutcome.EXISTED not in set(map(_outcome, results)):
                return results  # the common case, checked without a Python loop over the jobs
            clashes = []
            for i, (call, result) in enumerate(zip(calls, results, strict=True)):
                if result.outcome is EnqueueOutcome.EXISTED and call.options.job_id is None:
                    if result.identical:
                        results[i] = ops.Enqueued(result.id, result.queue, EnqueueOutcome.CREATED)
                    else:
                        clashes.append(i)
            if not clashes:
                return results
            again = yield from self._write_calls([calls[i] for i in clashes])
            for i, result in zip(clashes, again, strict=True):
                results[i] = result

    def _write_calls(self, calls: Sequence[TaskCall[Any]]) -> Generator[ops.Step, Any, list[ops.Enqueued]]:
        """Encode everything and check every queue name first, then register, then write: a
        call that is refused writes nothing, not even its queue's name."""
        if len(calls) == 1:  # the single enqueue: no grouping needed
            call = calls[0]
            job = encode_job(call, new_job_ids(1)[0], self.settings.max_payload_bytes)
            keys = self.keys(call.queue)
            if call.queue not in self._known_queues:
                yield from self._register(call.queue)
            return (yield from ops.enqueue(keys, [job]))
        by_queue: dict[str, list[ops.NewJob]] = {}
        limit = self.settings.max_payload_bytes
        for call in calls:  # the id is given when its chunk is sent
            by_queue.setdefault(call.queue, []).append(encode_job(call, "", limit))
        queue_keys = {queue: self.keys(queue) for queue in by_queue}
        for queue in by_queue:
            yield from self._register(queue)
        written = yield from ops.enqueue_chunks(
            (queue_keys[queue], _with_ids(jobs[start : start + BULK_CHUNK]))
            for queue, jobs in by_queue.items()
            for start in range(0, len(jobs), BULK_CHUNK)
        )
        results: dict[str, list[ops.Enqueued]] = {}
        for outcomes in written:
            results.setdefault(outcomes[0].queue, []).extend(outcomes)
        if len(results) == 1:
            return results[calls[0].queue]
        # Several queues: each call's outcome is the next one of its queue's, in call order.
        per_queue = {queue: iter(outcomes) for queue, outcomes in results.items()}
        return [next(per_queue[call.queue]) for call in calls]

    def _flows_op(
        self, flows: Sequence[Flow]
    ) -> Generator[ops.Step, Any, tuple[flow_ops.FlowPlan, list[ops.Enqueued]]]:
        fresh = iter(new_job_ids(sum(flow_ops.size(flow) for flow in flows)))
        plan = flow_ops.plan_flows(flows, fresh, self._encode)
        queues = list(dict.fromkeys(queue for queue, _ in plan.nodes))
        for queue in queues:  # a call made by hand (``TaskCall(...)``) skipped the check
            self.keys(queue)
        for queue in queues:
            yield from self._register(queue)
        results = yield from flow_ops.write_flows(self.settings.prefix, plan)
        return plan, results

    def _register(self, queue: str) -> Generator[ops.Step, Any, None]:
        """Record the queue name once per client, for ``conveyor info`` (outside the queue's slot).

        Called once the jobs were encoded and their queue names checked, so input that is
        refused registers nothing; and before the write, so a queue that holds jobs is always
        listed. Not after it: a refused SADD (OOM) would then report a written job as not
        written, and a producer dying between the two would leave jobs in an unlisted queue.
        A write that fails after the SADD leaves an empty queue listed, as one emptied does.
        """
        if queue not in self._known_queues:
            yield from ops.register_queue(queues_key(self.settings.prefix), queue)
            self._known_queues.add(queue)

    def _wait_op(self, queue: str, job_id: str, timeout: float | None) -> Generator[ops.Step, Any, Any]:
        result = yield from ops.wait_result(self.keys(queue), job_id, timeout)
        if result is ops.TIMEOUT:
            raise ResultTimeout(
                f"job {job_id} did not finish within {timeout} s; it is still queued or running"
            )
        return result

    def _cancel_op(
        self, queue: str, job_id: str, reason: str, by: str | None
    ) -> Generator[ops.Step, Any, str]:
        who = by or f"{socket.gethostname()}:{os.getpid()}"
        return ops.cancel(self.keys(queue), job_id, who, reason, CANCELLED_RETENTION)

    def _require(self, job: Job | None, queue: str, job_id: str) -> Job:
        if job is None:
            raise JobNotFound(f"no job {job_id} in queue {queue!r}")
        return job

    @staticmethod
    def _scripts() -> list[LuaScript]:
        return [load(name) for name in names()]

    @staticmethod
    def _unloaded(scripts: Sequence[LuaScript], replies: Sequence[Sequence[Any]]) -> list[LuaScript]:
        """The scripts that some primary lacks (``SCRIPT EXISTS`` replies, one per primary)."""
        return [
            script for script, *loaded in zip(scripts, *replies, strict=True) if not all(map(int, loaded))
        ]

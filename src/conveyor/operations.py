"""Every Redis operation of Conveyor, described once and without I/O.

An operation is a generator: it yields commands (:class:`Script`, :class:`Command`) and
receives each reply, then returns its parsed result. The sync and async faces each drive
these generators with one small executor (:mod:`conveyor.executor`), so the keys, the
arguments and the parsing of every reply are written exactly once.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

from . import serialization
from .errors import JobFailed, JobNotFound
from .job import EnqueueOutcome, Job, JobState
from .keys import QueueKeys
from .scripts import LuaScript, load


@dataclass(frozen=True, slots=True)
class Script:
    """Run a Lua script by SHA (the executor reloads it on NOSCRIPT)."""

    script: LuaScript
    keys: Sequence[str]
    args: Sequence[Any]


@dataclass(frozen=True, slots=True)
class Command:
    """Run one plain Redis command."""

    args: tuple[Any, ...]
    blocking: bool = False
    """True for commands that may block (BLPOP): the executor gives them their own connection."""


Step = Script | Command
Operation = Generator[Step, Any, Any]

ENQUEUE = load("enqueue")
CLAIM = load("claim")
COMPLETE = load("complete")
FAIL = load("fail")
EXTEND = load("extend")
SWEEP = load("sweep")
REQUEUE = load("requeue")
RETRY = load("retry")
REMOVE = load("remove")
PURGE = load("purge")
AWAIT = load("await")
COUNTS = load("counts")
LIST = load("list")

MAX_PRIORITY = 1 << 20


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job ready to be written: encoded and validated (see :mod:`conveyor.client`)."""

    id: str
    task: str
    args: bytes
    extras: tuple[Any, ...] = ()
    """Optional fields as a flat name/value sequence: 'k' kwargs JSON, 'o' options JSON,
    'p' priority, 'w' when ('+<ms>' delay or '@<ms>' absolute)."""


@dataclass(frozen=True, slots=True)
class Enqueued:
    id: str
    queue: str
    outcome: EnqueueOutcome


@dataclass(frozen=True, slots=True)
class Claimed:
    """A job handed to a worker by the claim script."""

    id: str
    token: str
    attempts: int
    task: str
    args: str
    kwargs: str
    options: str


@dataclass(frozen=True, slots=True)
class Retention:
    """How many finished jobs to keep and for how long (-1 = no limit, 0 = delete at once)."""

    keep_count: int
    keep_ms: int


def enqueue(keys: QueueKeys, jobs: Sequence[NewJob]) -> Generator[Step, Any, list[Enqueued]]:
    args: list[Any] = []
    for job in jobs:
        args += (job.id, job.task, job.args, len(job.extras) // 2, *job.extras)
    existed = yield Script(
        ENQUEUE,
        (keys.waiting, keys.prioritized, keys.delayed, keys.marker, keys.sequence, keys.job_prefix),
        args,
    )
    outcomes = [EnqueueOutcome.CREATED] * len(jobs)
    for position in existed:
        outcomes[int(position) - 1] = EnqueueOutcome.EXISTED
    return [Enqueued(job.id, keys.queue, outcome) for job, outcome in zip(jobs, outcomes, strict=True)]


def claim(
    keys: QueueKeys, max_jobs: int, lease_ms: int, worker_id: str, promote_limit: int = 1000
) -> Generator[Step, Any, tuple[list[Claimed], int]]:
    """Claim up to ``max_jobs``; returns the jobs and ms until the next delayed job (-1: none)."""
    reply = yield Script(
        CLAIM,
        (
            keys.waiting,
            keys.prioritized,
            keys.delayed,
            keys.active,
            keys.marker,
            keys.sequence,
            keys.job_prefix,
        ),
        (max_jobs, lease_ms, worker_id, promote_limit),
    )
    jobs = [
        Claimed(
            reply[i], reply[i + 1], int(reply[i + 2]), reply[i + 3], reply[i + 4], reply[i + 5], reply[i + 6]
        )
        for i in range(1, len(reply), 7)
    ]
    return jobs, int(reply[0])


def complete(
    keys: QueueKeys, retention: Retention, results: Sequence[tuple[str, str, bytes]]
) -> Generator[Step, Any, list[bool]]:
    """Record ``(id, token, result_json)`` triples; returns False where the token was stale."""
    args: list[Any] = [retention.keep_count, retention.keep_ms]
    for item in results:
        args += item
    reply = yield Script(COMPLETE, (keys.active, keys.completed, keys.job_prefix, keys.done_prefix), args)
    return [bool(flag) for flag in reply]


def fail(
    keys: QueueKeys, retention: Retention, failures: Sequence[tuple[str, str, bytes, int]]
) -> Generator[Step, Any, list[int]]:
    """Record ``(id, token, error_json, retry_delay_ms)``; delay -1 dead-letters.

    Returns per job: 1 retrying, 2 dead-lettered, 0 stale token.
    """
    args: list[Any] = [retention.keep_count, retention.keep_ms]
    for item in failures:
        args += item
    reply = yield Script(
        FAIL,
        (
            keys.active,
            keys.waiting,
            keys.prioritized,
            keys.delayed,
            keys.failed,
            keys.marker,
            keys.sequence,
            keys.job_prefix,
            keys.done_prefix,
        ),
        args,
    )
    return [int(flag) for flag in reply]


def extend(
    keys: QueueKeys, lease_ms: int, held: Sequence[tuple[str, str]]
) -> Generator[Step, Any, list[str]]:
    """Renew leases of ``(id, token)`` pairs; returns the ids whose lease was lost."""
    args: list[Any] = [lease_ms]
    for pair in held:
        args += pair
    reply = yield Script(EXTEND, (keys.active, keys.job_prefix), args)
    return list(reply)


def sweep(
    keys: QueueKeys, max_crashes: int, failed: Retention, limit: int = 1000
) -> Generator[Step, Any, tuple[list[str], list[str]]]:
    """Re-deliver jobs with expired leases; returns (recovered ids, dead-lettered ids)."""
    reply = yield Script(
        SWEEP,
        (
            keys.active,
            keys.waiting,
            keys.prioritized,
            keys.failed,
            keys.marker,
            keys.sequence,
            keys.job_prefix,
            keys.done_prefix,
        ),
        (max_crashes, limit, failed.keep_count, failed.keep_ms),
    )
    split = reply.index("|")
    return list(reply[:split]), list(reply[split + 1 :])


def requeue(keys: QueueKeys, held: Sequence[tuple[str, str]]) -> Generator[Step, Any, int]:
    args: list[Any] = []
    for pair in held:
        args += pair
    reply = yield Script(
        REQUEUE,
        (keys.active, keys.waiting, keys.prioritized, keys.marker, keys.sequence, keys.job_prefix),
        args,
    )
    return int(reply)


def retry_failed(
    keys: QueueKeys, job_ids: Sequence[str] | None, limit: int = 1000
) -> Generator[Step, Any, int]:
    """Move dead-lettered jobs back to waiting: the given ids, or (None) up to ``limit`` of them."""
    args: list[Any] = ["all", limit] if job_ids is None else ["ids", *job_ids]
    reply = yield Script(
        RETRY,
        (keys.failed, keys.waiting, keys.prioritized, keys.marker, keys.sequence, keys.job_prefix),
        args,
    )
    return int(reply)


def remove(keys: QueueKeys, job_id: str) -> Generator[Step, Any, JobState]:
    reply = yield Script(
        REMOVE,
        (keys.waiting, keys.prioritized, keys.delayed, keys.completed, keys.failed, keys.job_prefix),
        (job_id,),
    )
    return JobState(reply)


def purge(keys: QueueKeys, states: Sequence[JobState], batch: int = 1000) -> Generator[Step, Any, int]:
    """Delete all jobs in ``states`` (never active ones), in batches; returns how many."""
    total = 0
    while True:
        deleted, remaining = yield Script(
            PURGE,
            (keys.waiting, keys.prioritized, keys.delayed, keys.completed, keys.failed, keys.job_prefix),
            (batch, *(state.value for state in states)),
        )
        total += int(deleted)
        if int(remaining) == 0 or int(deleted) == 0:
            return total


def as_dict(reply: Any) -> dict[str, Any]:
    """An HGETALL reply as a dict: a flat list from the fast transport, a dict from redis-py."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2], strict=True))


def get_job(keys: QueueKeys, job_id: str) -> Generator[Step, Any, Job | None]:
    data = yield Command(("HGETALL", keys.job(job_id)))
    return Job.from_hash(keys.queue, job_id, as_dict(data)) if data else None


def counts(keys: QueueKeys) -> Generator[Step, Any, dict[str, int]]:
    reply = yield Script(
        COUNTS,
        (keys.waiting, keys.prioritized, keys.delayed, keys.active, keys.completed, keys.failed),
        (),
    )
    return dict(zip((s.value for s in JobState), (int(v) for v in reply), strict=True))


def list_jobs(
    keys: QueueKeys, state: JobState, offset: int = 0, limit: int = 50
) -> Generator[Step, Any, tuple[list[Job], int]]:
    """One page of jobs in ``state``; returns (jobs, total in that state)."""
    reply = yield Script(
        LIST,
        (
            keys.waiting,
            keys.prioritized,
            keys.delayed,
            keys.active,
            keys.completed,
            keys.failed,
            keys.job_prefix,
        ),
        (state.value, offset, limit),
    )
    jobs = []
    for i in range(1, len(reply), 2):
        flat = reply[i + 1]
        if flat:  # a finished job whose hash expired between the two reads is skipped
            jobs.append(Job.from_hash(keys.queue, reply[i], as_dict(flat)))
    return jobs, int(reply[0])


def wait_result(keys: QueueKeys, job_id: str, timeout: float | None) -> Generator[Step, Any, Any]:
    """Block until the job finishes (no polling), then return its result or raise JobFailed.

    Returns the ``TIMEOUT`` sentinel when ``timeout`` passed first; ``None`` waits forever.
    """
    reply = yield Script(AWAIT, (keys.job(job_id),), ())
    if reply is None:
        raise JobNotFound(f"no job {job_id} in queue {keys.queue!r}")
    state, payload = reply
    if not payload:
        block = 0 if timeout is None else max(timeout, 0.001)  # BLPOP 0 blocks forever
        popped = yield Command(("BLPOP", keys.done(job_id), block), blocking=True)
        if popped is None:
            return TIMEOUT
        payload = popped[1]
        state = "completed" if payload[0] == "c" else "failed"
        payload = payload[1:]
    if state == "completed":
        return serialization.loads(payload)
    raise JobFailed(job_id, serialization.loads(payload))


class _Timeout:
    def __repr__(self) -> str:
        return "TIMEOUT"


TIMEOUT: Any = _Timeout()


def register_queue(prefix_key: str, queue: str) -> Operation:
    yield Command(("SADD", prefix_key, queue))


def list_queues(prefix_key: str) -> Generator[Step, Any, list[str]]:
    reply = yield Command(("SMEMBERS", prefix_key))
    return sorted(reply)

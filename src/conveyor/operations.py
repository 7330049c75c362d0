"""Every Redis operation of Conveyor, described once and without I/O.

An operation is a generator: it yields commands (:class:`Script`, :class:`Command`) and
receives each reply, then returns its parsed result. The sync and async faces each drive
these generators with one small executor (:mod:`conveyor.executor`), so the keys, the
arguments and the parsing of every reply are written exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from . import serialization
from .errors import JobCancelled, JobFailed, JobNotFound, NotDurable
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


def _as_is(index: int, reply: Any) -> Any:
    return reply


@dataclass(frozen=True, slots=True)
class Pipeline:
    """Run scripts back to back without waiting for each reply; the reply is the list of
    ``each(index, reply)``, one per script.

    ``scripts`` is consumed lazily: the executor sends one script, then builds the next
    while Redis runs the first, so preparing a bulk write overlaps with executing it.
    ``each`` is called as each reply arrives, so reading the first replies overlaps with
    Redis running the last scripts.
    """

    scripts: Iterator[Script]
    each: Callable[[int, Any], Any] = _as_is


Step = Script | Command | Pipeline
Operation = Generator[Step, Any, Any]

ENQUEUE = load("enqueue")
ENQUEUE_PLAIN = load("enqueue_plain")
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
CANCEL = load("cancel")
PROGRESS = load("progress")
COUNTS = load("counts")
LIST = load("list")

MAX_PRIORITY = 1 << 20


@dataclass(slots=True)  # not frozen: made once per job, and frozen init costs 3x
class NewJob:
    """A job ready to be written: encoded and validated (see :mod:`conveyor.client`)."""

    id: str
    task: str
    args: bytes
    extras: tuple[Any, ...] = ()
    """Optional fields as a flat name/value sequence: 'k' kwargs JSON, 'o' options JSON,
    'p' priority, 'w' when ('+<ms>' delay or '@<ms>' absolute)."""


@dataclass(slots=True)  # not frozen: made once per job, and frozen init costs 3x
class Enqueued:
    id: str
    """The job this enqueue stands for: the new one, or the existing one it matched."""
    queue: str
    outcome: EnqueueOutcome
    replaced: str | None = None
    """With debounce: the not-yet-started job this one replaced (now cancelled)."""
    identical: bool = False
    """EXISTED, and that job has the same task and arguments as this enqueue."""


@dataclass(slots=True)  # not frozen: made once per job, and frozen init costs 3x
class Claimed:
    """A job handed to a worker by the claim script."""

    id: str
    token: str
    attempts: int
    task: str
    args: str
    kwargs: str
    options: str
    children: str
    """For the parent of a flow: its children's outcomes as JSON (see child.lua), else ''."""


@dataclass(slots=True)
class Claim:
    """What one claim handed to a worker."""

    jobs: list[Claimed]
    wait_ms: int
    """ms until the worker should look again by itself (the next delayed job is due, the
    rate window resets), -1 when never."""
    alone: bool
    """The worker must claim nothing more until it holds no job: it was handed a suspect
    (a job that lost its worker too often to run beside others), or told to make room for
    one (see ``scripts/claim.lua``)."""


@dataclass(frozen=True, slots=True)
class Retention:
    """How many finished jobs to keep and for how long (-1 = no limit, 0 = delete at once)."""

    keep_count: int
    keep_ms: int


def enqueue(keys: QueueKeys, jobs: Sequence[NewJob]) -> Generator[Step, Any, list[Enqueued]]:
    notes = yield enqueue_script(keys, jobs)
    return enqueue_outcomes(keys, jobs, notes)


def enqueue_chunks(
    chunks: Iterable[tuple[QueueKeys, Sequence[NewJob]]],
) -> Generator[Step, Any, list[list[Enqueued]]]:
    """Write many chunks of jobs in one pipeline (a bulk enqueue); outcomes per chunk.

    ``chunks`` is consumed lazily, one chunk as each is sent (see :class:`Pipeline`).
    """
    sent: list[tuple[QueueKeys, Sequence[NewJob]]] = []

    def scripts() -> Iterator[Script]:
        for keys, jobs in chunks:
            sent.append((keys, jobs))
            yield enqueue_script(keys, jobs)

    def outcomes(index: int, notes: Sequence[Any]) -> list[Enqueued]:
        keys, jobs = sent[index]
        return enqueue_outcomes(keys, jobs, notes)

    written: list[list[Enqueued]] = yield Pipeline(scripts(), outcomes)
    return written


def enqueue_script(keys: QueueKeys, jobs: Sequence[NewJob]) -> Script:
    args: list[Any] = []
    if not any(job.extras for job in jobs):  # the common case has its own, leaner script
        for job in jobs:
            args += (job.id, job.task, job.args)
        return Script(ENQUEUE_PLAIN, (keys.waiting, keys.marker, keys.events, keys.job_prefix), args)
    for job in jobs:
        args += (job.id, job.task, job.args, len(job.extras) // 2, *job.extras)
    return Script(
        ENQUEUE,
        (
            keys.waiting,
            keys.prioritized,
            keys.delayed,
            keys.marker,
            keys.sequence,
            keys.job_prefix,
            keys.events,
            keys.cancelled,
            keys.dedup_prefix,
            keys.group_prefix,
            keys.parents,
            keys.suspects,
        ),
        args,
    )


def enqueue_outcomes(keys: QueueKeys, jobs: Sequence[NewJob], notes: Sequence[Any]) -> list[Enqueued]:
    results = [Enqueued(job.id, keys.queue, EnqueueOutcome.CREATED) for job in jobs]
    for i in range(0, len(notes), 3):
        index, kind, other = int(notes[i]) - 1, notes[i + 1], notes[i + 2]
        if kind in ("existed", "identical"):
            same = kind == "identical"
            results[index] = Enqueued(other, keys.queue, EnqueueOutcome.EXISTED, identical=same)
        elif kind == "duplicate":
            results[index] = Enqueued(other, keys.queue, EnqueueOutcome.DUPLICATE)
        else:
            results[index] = Enqueued(jobs[index].id, keys.queue, EnqueueOutcome.CREATED, replaced=other)
    return results


def wait_replicas(enqueued: Sequence[Enqueued], replicas: int, timeout_ms: int) -> Generator[Step, Any, None]:
    """WAIT until ``replicas`` replicas have the writes of this connection; raise NotDurable if not.

    Must run on the connection that made the writes (the client pins one for this).
    """
    acknowledged = int((yield Command(("WAIT", replicas, timeout_ms))))
    if acknowledged < replicas:
        ids = [e.id for e in enqueued]
        raise NotDurable(
            f"{len(ids)} jobs reached the primary, but only {acknowledged} of {replicas} replicas "
            f"acknowledged them within {timeout_ms} ms; they are lost if the primary fails now",
            ids,
            acknowledged,
            replicas,
        )


def claim(
    keys: QueueKeys,
    max_jobs: int,
    lease_ms: int,
    worker_id: str,
    failed: Retention = Retention(-1, -1),
    promote_limit: int = 1000,
    *,
    idle: bool = True,
    make_room_ms: int = 5000,
) -> Generator[Step, Any, Claim]:
    """Claim up to ``max_jobs``. ``idle``: the caller holds no job, so it may be handed a
    suspect (alone); ``make_room_ms``: how long a suspect waits for an idle worker before a
    busy caller is told to make room for it."""
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
            keys.settings,
            keys.rate,
            keys.failed,
            keys.done_prefix,
            keys.events,
            keys.group_prefix,
            keys.outbox,
            keys.suspects,
        ),
        (
            max_jobs,
            lease_ms,
            worker_id,
            promote_limit,
            failed.keep_count,
            failed.keep_ms,
            1 if idle else 0,
            make_room_ms,
        ),
    )
    jobs = [
        Claimed(
            reply[i],
            reply[i + 1],
            int(reply[i + 2]),
            reply[i + 3],
            reply[i + 4],
            reply[i + 5],
            reply[i + 6],
            reply[i + 7],
        )
        for i in range(2, len(reply), 8)
    ]
    return Claim(jobs, int(reply[0]), reply[1] == 1)


def suspects_waiting(keys: QueueKeys) -> Generator[Step, Any, int]:
    """How many suspects wait to be handed out alone (see ``scripts/claim.lua``)."""
    return int((yield Command(("ZCARD", keys.suspects))))


def complete(
    keys: QueueKeys, retention: Retention, results: Sequence[tuple[str, str, bytes]]
) -> Generator[Step, Any, list[int]]:
    """Record ``(id, token, result_json)`` triples; returns per job 1 recorded, 2 recorded with
    a note for its parent in the outbox (flows), 0 refused because the token was stale."""
    args: list[Any] = [retention.keep_count, retention.keep_ms]
    for item in results:
        args += item
    reply = yield Script(
        COMPLETE,
        (
            keys.active,
            keys.completed,
            keys.job_prefix,
            keys.done_prefix,
            keys.waiting,
            keys.prioritized,
            keys.marker,
            keys.events,
            keys.group_prefix,
            keys.outbox,
        ),
        args,
    )
    return [int(flag) for flag in reply]


RETRY_NEVER = -1
"""Retry delay meaning: dead-letter the job."""
CANCELLED = -2
"""Retry delay meaning: the job was aborted; record it as cancelled."""


def fail(
    keys: QueueKeys, retention: Retention, failures: Sequence[tuple[str, str, bytes, int, int]]
) -> Generator[Step, Any, list[int]]:
    """Record ``(id, token, error_json, retry_delay_ms, refund)`` for attempts that did not complete.

    A delay of ``RETRY_NEVER`` dead-letters, ``CANCELLED`` records an abort; ``refund`` 1
    gives the attempt back. Returns per job: 1 retrying, 2 dead-lettered, 3 cancelled, 0 stale;
    12 and 13 for 2 and 3 with a note for the job's parent in the outbox (flows).
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
            keys.cancelled,
            keys.events,
            keys.group_prefix,
            keys.outbox,
            keys.suspects,
        ),
        args,
    )
    return [int(flag) for flag in reply]


def cancel(
    keys: QueueKeys, job_id: str, by: str, reason: str, retention: Retention
) -> Generator[Step, Any, str]:
    """Cancel a waiting or delayed job, or ask its worker to abort a running one.

    Returns ``"cancelled"`` or ``"aborting"``.
    """
    payload = serialization.dumps({"type": "Cancelled", "message": reason, "by": by, "reason": "cancelled"})
    reply = yield Script(
        CANCEL,
        (
            keys.waiting,
            keys.prioritized,
            keys.delayed,
            keys.cancelled,
            keys.job_prefix,
            keys.done_prefix,
            keys.events,
            keys.group_prefix,
            keys.outbox,
            keys.parents,
            keys.suspects,
        ),
        (job_id, payload, retention.keep_count, retention.keep_ms),
    )
    return str(reply)


def report(
    keys: QueueKeys, job_id: str, token: str, kind: str, value: bytes | str, max_lines: int, keep_ms: int
) -> Generator[Step, Any, bool]:
    """Write a running job's progress (``kind="progress"``) or one log line (``kind="log"``)."""
    reply = yield Script(
        PROGRESS,
        (keys.job(job_id), keys.logs(job_id), keys.events),
        (token, kind, value, max_lines, keep_ms, job_id),
    )
    return bool(reply)


def job_logs(keys: QueueKeys, job_id: str, start: int = 0, end: int = -1) -> Generator[Step, Any, list[str]]:
    reply = yield Command(("LRANGE", keys.logs(job_id), start, end))
    return list(reply)


@dataclass(frozen=True, slots=True)
class Event:
    """One lifecycle event of one job, as read from the queue's event stream."""

    kind: str
    """enqueued, active, progress, completed, retrying, failed, stalled, aborting, cancelled."""
    job_id: str
    stream_id: str
    """Position in the stream; pass it as ``after`` to continue from here."""
    fields: dict[str, str]
    """Small extra fields: worker, delay, reason, crashes, progress value, count."""


def read_events(
    keys: QueueKeys, after: str = "0-0", count: int = 1000, block_ms: int | None = None
) -> Generator[Step, Any, tuple[list[Event], str]]:
    """Events after stream position ``after`` (``"$"``: only new ones); returns them and the
    position to continue from. Batch entries (one per claim or acknowledgement) are expanded
    into one event per job."""
    command: tuple[Any, ...] = ("XREAD", "COUNT", count)
    if block_ms is not None:
        command += ("BLOCK", block_ms)
    reply = yield Command((*command, "STREAMS", keys.events, after), blocking=block_ms is not None)
    events: list[Event] = []
    last = after
    if reply:
        entries = reply[0][1] if isinstance(reply, list) else next(iter(reply.values()))[0]
        for stream_id, raw in entries:
            fields = as_dict(raw)
            kind = fields.pop("e", "")
            ids = fields.pop("ids", None)
            single = fields.pop("id", None)
            for job_id in ids.split(",") if ids else [single] if single else []:
                events.append(Event(kind, job_id, stream_id, fields))
            last = stream_id
    return events, last


SETTING_NAMES = (
    "paused",
    "concurrency",
    "rate_max",
    "rate_ms",
    "group_concurrency",
    "group_rate_max",
    "group_rate_ms",
    "aging_ms",
)


def get_settings(keys: QueueKeys) -> Generator[Step, Any, dict[str, int]]:
    reply = yield Command(("HMGET", keys.settings, *SETTING_NAMES))
    return {name: int(value) for name, value in zip(SETTING_NAMES, reply, strict=True) if value is not None}


def update_settings(keys: QueueKeys, values: dict[str, int | None]) -> Generator[Step, Any, None]:
    """Set (or with ``None`` remove) queue settings, then wake a worker to apply them."""
    drop = [name for name, value in values.items() if value is None]
    keep = [item for name, value in values.items() if value is not None for item in (name, value)]
    if drop:
        yield Command(("HDEL", keys.settings, *drop))
    if keep:
        yield Command(("HSET", keys.settings, *keep))
    yield Command(("ZADD", keys.marker, 0, "w"))


def extend(
    keys: QueueKeys, lease_ms: int, held: Sequence[tuple[str, str]]
) -> Generator[Step, Any, tuple[list[str], list[str]]]:
    """Renew leases of ``(id, token)`` pairs; returns (ids whose lease was lost, ids to abort)."""
    args: list[Any] = [lease_ms]
    for pair in held:
        args += pair
    reply = yield Script(EXTEND, (keys.active, keys.job_prefix), args)
    split = reply.index("|")
    return list(reply[:split]), list(reply[split + 1 :])


def sweep(
    keys: QueueKeys, max_crashes: int, failed: Retention, limit: int = 1000, alone_after: int | None = None
) -> Generator[Step, Any, tuple[list[str], list[str]]]:
    """Re-deliver jobs with expired leases; returns (recovered ids, dead-lettered ids).

    A job lost ``alone_after`` times (default: ``max_crashes - 1``, its last chance) runs
    only alone from then on (see ``scripts/sweep.lua``)."""
    if alone_after is None:
        alone_after = max(1, max_crashes - 1)
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
            keys.events,
            keys.group_prefix,
            keys.outbox,
            keys.suspects,
        ),
        (max_crashes, limit, failed.keep_count, failed.keep_ms, alone_after),
    )
    split = reply.index("|")
    return list(reply[:split]), list(reply[split + 1 :])


def _back_to_waiting(keys: QueueKeys, source: str) -> tuple[str, ...]:
    """The KEYS of requeue.lua and retry.lua, which share one layout: where the jobs come
    from, then every key that putting a job back in line touches."""
    return (
        source,
        keys.waiting,
        keys.prioritized,
        keys.marker,
        keys.sequence,
        keys.job_prefix,
        keys.group_prefix,
        keys.suspects,
    )


def requeue(keys: QueueKeys, held: Sequence[tuple[str, str]]) -> Generator[Step, Any, int]:
    args: list[Any] = []
    for pair in held:
        args += pair
    reply = yield Script(REQUEUE, _back_to_waiting(keys, keys.active), args)
    return int(reply)


def retry_failed(
    keys: QueueKeys, job_ids: Sequence[str] | None, limit: int = 1000
) -> Generator[Step, Any, int]:
    """Move dead-lettered jobs back to waiting: the given ids, or (None) up to ``limit`` of them."""
    args: list[Any] = ["all", limit] if job_ids is None else ["ids", *job_ids]
    reply = yield Script(RETRY, _back_to_waiting(keys, keys.failed), args)
    return int(reply)


def _not_running(keys: QueueKeys) -> tuple[str, ...]:
    """The KEYS of remove.lua and purge.lua, which share one layout: every place a job that
    is not running can be, and the job hash prefix."""
    return (
        keys.waiting,
        keys.prioritized,
        keys.delayed,
        keys.completed,
        keys.failed,
        keys.job_prefix,
        keys.cancelled,
        keys.group_prefix,
        keys.parents,
        keys.outbox,
        keys.suspects,
    )


def remove(keys: QueueKeys, job_id: str) -> Generator[Step, Any, JobState]:
    reply = yield Script(
        REMOVE,
        _not_running(keys),
        (job_id,),
    )
    return JobState(reply)


def purge(keys: QueueKeys, states: Sequence[JobState], batch: int = 1000) -> Generator[Step, Any, int]:
    """Delete all jobs in ``states`` (never active ones), in batches; returns how many."""
    total = 0
    while True:
        deleted, remaining = yield Script(
            PURGE,
            _not_running(keys),
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
        (
            keys.waiting,
            keys.prioritized,
            keys.delayed,
            keys.active,
            keys.completed,
            keys.failed,
            keys.cancelled,
            keys.group_prefix,
            keys.parents,
            keys.suspects,
        ),
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
            keys.cancelled,
            keys.group_prefix,
            keys.parents,
            keys.suspects,
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
        state = {"c": "completed", "f": "failed", "x": "cancelled"}[payload[0]]
        payload = payload[1:]
    if state == "completed":
        return serialization.loads(payload)
    if state == "cancelled":
        raise JobCancelled(job_id, serialization.loads(payload))
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


PROMOTE = load("promote")


def promote(keys: QueueKeys, job_id: str) -> Generator[Step, Any, str]:
    """Make a delayed job ready now; raises ``JobNotFound`` or ``InvalidState``."""
    reply = yield Script(
        PROMOTE,
        (
            keys.delayed,
            keys.waiting,
            keys.prioritized,
            keys.marker,
            keys.sequence,
            keys.job_prefix,
            keys.events,
            keys.group_prefix,
            keys.suspects,
        ),
        (job_id,),
    )
    return str(reply)

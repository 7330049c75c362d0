"""Reading jobs and queues: a job, counts, pages, logs, the event stream, a result to wait for."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from .. import serialization
from ..errors import JobCancelled, JobFailed, JobNotFound
from ..job import Job, JobState
from .keys import QueueKeys
from .script_keys import AwaitKeys
from .scripts import load
from .steps import Command, Operation, Script, Step, as_dict

AWAIT = load("await")


COUNTS = load("counts")


LIST = load("list")


def job_logs(keys: QueueKeys, job_id: str, start: int = 0, end: int = -1) -> Generator[Step, Any, list[str]]:
    """Lines ``start`` to ``end`` of a job's log, both included; negative ones count from the
    newest (``-100, -1``: the last hundred)."""
    reply = yield Command(("LRANGE", keys.logs(job_id), start, end))
    return list(reply)


def last_event_id(keys: QueueKeys) -> Generator[Step, Any, str]:
    """The position of the newest event in the queue's stream (``"0-0"`` when it is empty):
    what ``"$"`` stands for now, to read on from without skipping what comes meanwhile."""
    reply = yield Command(("XREVRANGE", keys.events, "+", "-", "COUNT", 1))
    return str(reply[0][0]) if reply else "0-0"


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
        for stream_id, raw in reply[0][1]:  # [[stream, entries]]: one stream was read
            fields = as_dict(raw)
            kind = fields.pop("e", "")
            ids = fields.pop("ids", None)
            single = fields.pop("id", None)
            for job_id in ids.split(",") if ids else [single] if single else []:
                events.append(Event(kind, job_id, stream_id, fields))
            last = stream_id
    return events, last


def get_job(keys: QueueKeys, job_id: str) -> Generator[Step, Any, Job | None]:
    data = yield Command(("HGETALL", keys.job(job_id)))
    return Job.from_hash(keys.queue, job_id, as_dict(data)) if data else None


def counts(keys: QueueKeys) -> Generator[Step, Any, dict[str, int]]:
    reply = yield Script(
        COUNTS,
        keys.for_counts,
        (),
    )
    return dict(zip((s.value for s in JobState), (int(v) for v in reply), strict=True))


def list_jobs(
    keys: QueueKeys, state: JobState, offset: int = 0, limit: int = 50
) -> Generator[Step, Any, tuple[list[Job], int]]:
    """One page of jobs in ``state``; returns (jobs, total in that state)."""
    reply = yield Script(
        LIST,
        keys.for_list,
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
    reply = yield Script(AWAIT, AwaitKeys(job=keys.job(job_id)), ())
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

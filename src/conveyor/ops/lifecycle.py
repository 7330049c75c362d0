"""A job's life on a worker: claim, report, complete, fail, extend the lease, sweep, requeue."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from .keys import QueueKeys
from .script_keys import ProgressKeys
from .scripts import load
from .steps import Command, Retention, Script, Step

CLAIM = load("claim")


COMPLETE = load("complete")


FAIL = load("fail")


EXTEND = load("extend")


SWEEP = load("sweep")


REQUEUE = load("requeue")


PROGRESS = load("progress")


KEEP_ALL = Retention(-1, -1)
"""No limit on count or age."""


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
    ready_ms: int = 0
    """When the job last became ready to run (enqueued, due, or handed back; ms): its wait
    ends at the claim's ``now_ms``."""


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
    now_ms: int = 0
    """Redis's clock at the claim (ms): when the claimed jobs stopped waiting."""


def claim(
    keys: QueueKeys,
    max_jobs: int,
    lease_ms: int,
    worker_id: str,
    failed: Retention = KEEP_ALL,
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
        keys.for_claim,
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
            str(reply[i + 1]),  # Lua hands the token back as a number; answers name it as text
            int(reply[i + 2]),
            reply[i + 3],
            reply[i + 4],
            reply[i + 5],
            reply[i + 6],
            reply[i + 7],
            int(reply[i + 8] or 0),
        )
        for i in range(3, len(reply), 9)
    ]
    return Claim(jobs, int(reply[0]), reply[1] == 1, int(reply[2]))


def suspects_waiting(keys: QueueKeys) -> Generator[Step, Any, int]:
    """How many suspects wait to be handed out alone (see ``scripts/claim.lua``)."""
    return int((yield Command(("ZCARD", keys.suspects))))


def complete(
    keys: QueueKeys,
    retention: Retention,
    results: Sequence[tuple[str, str, bytes]],
    times: Sequence[int] = (),
) -> Generator[Step, Any, list[int]]:
    """Record ``(id, token, result_json)`` triples; returns per job 1 recorded, 2 recorded with
    a note for its parent in the outbox (flows), ``ALREADY_RECORDED`` (an earlier try of the
    same batch got through), 0 refused because the token was stale. ``times``: the wait and
    run times a worker measured since its last acknowledgement of the queue
    (:meth:`conveyor.ops.metrics.Tally.take`), added to the queue's figures in the same step."""
    args: list[Any] = [retention.keep_count, retention.keep_ms, " ".join(map(str, times))]
    for item in results:
        args += item
    reply = yield Script(
        COMPLETE,
        keys.for_complete,
        args,
    )
    return [int(flag) for flag in reply]


RETRY_NEVER = -1
"""Retry delay meaning: dead-letter the job."""


CANCELLED = -2
"""Retry delay meaning: the job was aborted; record it as cancelled."""


NOT_DEFERRED = -1
"""Deferral cap meaning: an ordinary failure, not a ``RetryAfter``."""


ALREADY_RECORDED = 4
"""complete/fail reply: this attempt's outcome was recorded already, by an earlier try of
the same acknowledgement whose reply was lost with its connection."""


def fail(
    keys: QueueKeys,
    retention: Retention,
    failures: Sequence[tuple[str, str, bytes, int, int]],
    times: Sequence[int] = (),
) -> Generator[Step, Any, list[int]]:
    """Record ``(id, token, error_json, retry_delay_ms, deferral_cap)`` for attempts that did
    not complete.

    A delay of ``RETRY_NEVER`` dead-letters, ``CANCELLED`` records an abort. A deferral cap
    of ``NOT_DEFERRED`` is an ordinary failure; n >= 0 a ``RetryAfter``: the attempt is given
    back, and the job fails for good when it was deferred more than n times. Returns per job:
    1 retrying, 2 dead-lettered, 3 cancelled, ``ALREADY_RECORDED``, 0 stale; 12 and 13 for 2
    and 3 with a note for the job's parent in the outbox (flows). ``times``: as for
    :func:`complete`.
    """
    args: list[Any] = [retention.keep_count, retention.keep_ms, " ".join(map(str, times))]
    for item in failures:
        args += item
    reply = yield Script(
        FAIL,
        keys.for_fail,
        args,
    )
    return [int(flag) for flag in reply]


def report(
    keys: QueueKeys, job_id: str, token: str, kind: str, value: bytes | str, max_lines: int, keep_ms: int
) -> Generator[Step, Any, bool]:
    """Write a running job's progress (``kind="progress"``) or one log line (``kind="log"``)."""
    reply = yield Script(
        PROGRESS,
        ProgressKeys(job=keys.job(job_id), logs=keys.logs(job_id), events=keys.events),
        (token, kind, value, max_lines, keep_ms, job_id),
    )
    return bool(reply)


def extend(
    keys: QueueKeys, lease_ms: int, held: Sequence[tuple[str, str]]
) -> Generator[Step, Any, tuple[list[str], list[str]]]:
    """Renew leases of ``(id, token)`` pairs; returns (tokens whose lease was lost, tokens to
    abort): attempts, since one worker may hold two attempts of one job."""
    args: list[Any] = [lease_ms]
    for pair in held:
        args += pair
    reply = yield Script(EXTEND, keys.for_extend, args)
    split = reply.index("|")
    return list(reply[:split]), list(reply[split + 1 :])


class Swept(NamedTuple):
    """What one sweep of a queue did."""

    recovered: list[str]
    """Jobs re-delivered: their worker was lost."""
    dead: list[str]
    """Jobs dead-lettered: their worker was lost ``max_crashes`` times."""
    silence_ms: int
    """When this sweep ended a silence -- no worker had reached the queue's leases for this
    long: Redis was down or out of reach -- its length, else 0."""
    held_back: int
    """Leases that ran out during the last silence, left to their workers to renew for a
    lease's time after it instead of being re-delivered (see ``scripts/sweep.lua``)."""


def sweep(
    keys: QueueKeys,
    max_crashes: int,
    failed: Retention,
    limit: int = 1000,
    alone_after: int | None = None,
    lease_ms: int = 10_000,
) -> Generator[Step, Any, Swept]:
    """Re-deliver jobs with expired leases, but not those that ran out while no worker could
    reach Redis, before their workers had ``lease_ms`` (the sweeping worker's lease) to
    renew them.

    A job lost ``alone_after`` times (default: ``max_crashes - 1``, its last chance) runs
    only alone from then on (see ``scripts/sweep.lua``)."""
    if alone_after is None:
        alone_after = max(1, max_crashes - 1)
    reply = yield Script(
        SWEEP,
        keys.for_sweep,
        (max_crashes, limit, failed.keep_count, failed.keep_ms, alone_after, lease_ms),
    )
    first = reply.index("|")
    second = reply.index("|", first + 1)
    return Swept(
        list(reply[:first]), list(reply[first + 1 : second]), int(reply[second + 1]), int(reply[second + 2])
    )


def requeue(keys: QueueKeys, held: Sequence[tuple[str, str]]) -> Generator[Step, Any, int]:
    args: list[Any] = []
    for pair in held:
        args += pair
    reply = yield Script(REQUEUE, keys.for_requeue, args)
    return int(reply)

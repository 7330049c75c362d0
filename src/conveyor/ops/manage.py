"""Acting on jobs and queues from outside: cancel, retry, remove, purge, promote, settings."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

from .. import serialization
from ..job import JobState
from .keys import QueueKeys
from .lifecycle import back_to_waiting_keys
from .scripts import load
from .steps import Command, Retention, Script, Step

RETRY = load("retry")


REMOVE = load("remove")


PURGE = load("purge")


CANCEL = load("cancel")


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


def retry_failed(
    keys: QueueKeys, job_ids: Sequence[str] | None, limit: int = 1000
) -> Generator[Step, Any, int]:
    """Move dead-lettered jobs back to waiting: the given ids, or (None) up to ``limit`` of them."""
    args: list[Any] = ["all", limit] if job_ids is None else ["ids", *job_ids]
    reply = yield Script(RETRY, back_to_waiting_keys(keys, keys.failed), args)
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

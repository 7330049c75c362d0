"""Acting on jobs and queues from outside: cancel, retry, remove, purge, promote, settings."""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from typing import Any

from .. import serialization
from ..job import JobState
from .keys import QueueKeys
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
        keys.for_cancel,
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


class Unset:
    """Marks an argument that was not given, where ``None`` has a meaning of its own."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET = Unset()


def set_limits(
    keys: QueueKeys,
    concurrency: int | Unset | None = UNSET,
    rate: tuple[int, float] | Unset | None = UNSET,
    group_concurrency: int | Unset | None = UNSET,
    group_rate: tuple[int, float] | Unset | None = UNSET,
    priority_aging: float | Unset | None = UNSET,
) -> Generator[Step, Any, None]:
    """Check the limits given (``None`` removes one, ``UNSET`` leaves it) and store them as
    the queue's settings, in ms; raises ``ValueError`` before writing anything."""
    values: dict[str, int | None] = {}
    if not isinstance(priority_aging, Unset):
        if priority_aging is not None and priority_aging <= 0:
            raise ValueError("priority_aging must be a positive number of seconds (or None for none)")
        values["aging_ms"] = None if priority_aging is None else math.ceil(priority_aging * 1000)
    for prefix, max_active, per_window in (
        ("", concurrency, rate),
        ("group_", group_concurrency, group_rate),
    ):
        if not isinstance(max_active, Unset):
            if max_active is not None and max_active < 1:
                raise ValueError(f"{prefix}concurrency must be at least 1 (or None for no limit)")
            values[f"{prefix}concurrency"] = max_active
        if not isinstance(per_window, Unset):
            if per_window is None:
                values[f"{prefix}rate_max"] = values[f"{prefix}rate_ms"] = None
            else:
                count, seconds = per_window
                if count < 1 or seconds <= 0:
                    raise ValueError(f"{prefix}rate must be (jobs >= 1, per seconds > 0)")
                values[f"{prefix}rate_max"] = int(count)
                values[f"{prefix}rate_ms"] = math.ceil(seconds * 1000)
    return (yield from update_settings(keys, values))


def retry_failed(
    keys: QueueKeys, job_ids: Sequence[str] | None, limit: int = 1000
) -> Generator[Step, Any, int]:
    """Move dead-lettered jobs back to waiting: the given ids, or (None) up to ``limit`` of them."""
    args: list[Any] = ["all", limit] if job_ids is None else ["ids", *job_ids]
    reply = yield Script(RETRY, keys.for_retry, args)
    return int(reply)


def remove(keys: QueueKeys, job_id: str) -> Generator[Step, Any, JobState]:
    reply = yield Script(
        REMOVE,
        keys.for_remove,
        (job_id,),
    )
    return JobState(reply)


def purge(keys: QueueKeys, states: Sequence[JobState], batch: int = 1000) -> Generator[Step, Any, int]:
    """Delete all jobs in ``states`` (never active ones), in batches; returns how many."""
    total = 0
    while True:
        deleted, remaining = yield Script(
            PURGE,
            keys.for_purge,
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
        keys.for_promote,
        (job_id,),
    )
    return str(reply)

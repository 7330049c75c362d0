"""The history hand-off in Redis: turning it on and off, and what archivers read and
acknowledge (see ``scripts/include/history.lua`` for how jobs enter it). No I/O here."""

from __future__ import annotations

import json
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from .keys import QueueKeys
from .scripts import load
from .steps import Command, Script, Step

ARCHIVED = load("archived")
HISTORY_ON = load("history_on")

GROUP = "archivers"
"""The consumer group every archiver of every queue reads the hand-off in."""

DEFAULT_MAX_JOBS = 200_000
"""How many finished jobs a queue's hand-off holds at most while no archiver stores them
(the database is down, or no process archives): beyond it, jobs still finish, and those
not handed off are counted as dropped."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry of the hand-off: the jobs one script call ended, each job's fields as they
    were at its end."""

    entry_id: str
    jobs: list[dict[str, str]]
    count: int
    """How many jobs the entry says it holds (what it counts for under the bound)."""


@dataclass(frozen=True, slots=True)
class Backlog:
    """The state of one queue's hand-off."""

    enabled: bool
    max_jobs: int | None
    jobs: int
    """Finished jobs the hand-off holds, not yet stored (read by an archiver or not)."""
    entries: int
    """Stream entries holding them (one per script call that ended jobs)."""
    pending: int
    """Entries read by an archiver and not yet acknowledged."""
    dropped: int
    """Jobs not handed off since history was turned on, because the hand-off was full."""
    oldest_ms: int | None
    """When the oldest entry was added (ms since the epoch), if there is one."""


def enable(
    keys: QueueKeys, max_jobs: int = DEFAULT_MAX_JOBS, *, replace: bool = False
) -> Generator[Step, Any, int]:
    """Turn the queue's history on: from now, each job that ends is handed off; returns the
    bound in force. Without ``replace``, a bound set before (by an operator, or another
    archiver) is kept."""
    if max_jobs < 1:
        raise ValueError("the hand-off must hold at least one job")
    reply = yield Script(HISTORY_ON, keys.for_history_on, (max_jobs, GROUP, 1 if replace else 0))
    return int(reply)


def disable(keys: QueueKeys) -> Generator[Step, Any, None]:
    """Turn the queue's history off: jobs that end from now are not handed off. What the
    hand-off holds stays until archivers have stored it."""
    yield Command(("HDEL", keys.history_feed, "max"))


def backlog(keys: QueueKeys) -> Generator[Step, Any, Backlog]:
    feed = yield Command(("HMGET", keys.history_feed, "max", "dropped", "held"))
    length = yield Command(("XLEN", keys.history))
    pending = 0
    if length:
        summary = yield Command(("XPENDING", keys.history, GROUP))
        pending = int(summary[0]) if summary else 0
    first = yield Command(("XRANGE", keys.history, "-", "+", "COUNT", 1))
    oldest = int(str(first[0][0]).split("-")[0]) if first else None
    return Backlog(
        enabled=feed[0] is not None,
        max_jobs=int(feed[0]) if feed[0] is not None else None,
        jobs=max(0, int(feed[2] or 0)),
        entries=int(length),
        pending=pending,
        dropped=int(feed[1] or 0),
        oldest_ms=oldest,
    )


def _job(job_id: str, packed: str) -> dict[str, str]:
    """One job of an entry: ``[state, finished ms, result or error, [field, value, ...]]``
    (see ``scripts/include/history.lua``) as the job's fields, as its hash spells them."""
    try:
        state, finished, payload, flat = orjson.loads(packed)
    except (orjson.JSONDecodeError, ValueError, TypeError):
        try:  # bytes that are not UTF-8 came through the transport as lone surrogates
            state, finished, payload, flat = json.loads(packed)
        except (ValueError, TypeError):
            return {"id": job_id, "unreadable": str(packed)[:300]}
    fields = (
        {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat) - 1, 2)} if isinstance(flat, list) else {}
    )
    fields.pop("r", None)
    fields.pop("e", None)
    fields.update(id=job_id, s=str(state), ft=str(finished))
    if isinstance(payload, str):
        fields["r" if state == "completed" else "e"] = payload
    return fields


def _entry(entry_id: Any, flat: Sequence[Any]) -> Entry:
    """Split an entry: ``jobs N``, then one field per job, its id, holding its fields."""
    count = int(flat[1]) if len(flat) >= 2 and flat[0] == "jobs" and str(flat[1]).isdigit() else 0
    start = 2 if count else 0
    jobs = [_job(str(flat[i]), flat[i + 1]) for i in range(start, len(flat) - 1, 2)]
    return Entry(str(entry_id), jobs, count or len(jobs))


def _entries(raw: Any) -> list[Entry]:
    # Entries deleted meanwhile come back with no fields (Redis 6.2; 7 lists them apart).
    return [_entry(entry_id, fields) for entry_id, fields in raw if fields is not None]


def read_new(
    keys: QueueKeys, consumer: str, count: int, block_ms: int | None = None
) -> Generator[Step, Any, list[Entry]]:
    """Entries no archiver has read yet, now pending for ``consumer``."""
    command: tuple[Any, ...] = ("XREADGROUP", "GROUP", GROUP, consumer, "COUNT", count)
    if block_ms is not None:
        command += ("BLOCK", block_ms)
    reply = yield Command((*command, "STREAMS", keys.history, ">"), blocking=block_ms is not None)
    if not reply:
        return []
    return _entries(reply[0][1])


def claim_stale(
    keys: QueueKeys, consumer: str, min_idle_ms: int, count: int
) -> Generator[Step, Any, list[Entry]]:
    """Take over entries another archiver read ``min_idle_ms`` ago or more and did not
    acknowledge: it died, or cannot reach the database. Storing them twice is harmless (the
    store skips what it holds), losing them is not."""
    reply = yield Command(("XAUTOCLAIM", keys.history, GROUP, consumer, min_idle_ms, "0-0", "COUNT", count))
    return _entries(reply[1])


def archived(keys: QueueKeys, entries: Sequence[Entry]) -> Generator[Step, Any, int]:
    """Acknowledge and delete entries the store has committed; how many were still pending."""
    if not entries:
        return 0
    args: list[Any] = [GROUP]
    for entry in entries:
        args += (entry.entry_id, entry.count)
    reply = yield Script(ARCHIVED, keys.for_archived, args)
    return int(reply)

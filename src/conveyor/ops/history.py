"""The history hand-off in Redis: turning it on and off, and what archivers read and
acknowledge (see ``scripts/include/history.lua`` for how jobs enter it). No I/O here."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

from .keys import QueueKeys
from .scripts import load
from .steps import Command, Script, Step, as_dict

ARCHIVED = load("archived")
HISTORY_ON = load("history_on")

GROUP = "archivers"
"""The consumer group every archiver of every queue reads the hand-off in."""

DEFAULT_MAX_ENTRIES = 200_000
"""How many finished jobs a queue's hand-off holds at most while no archiver stores them
(the database is down, or no process archives): beyond it, jobs still finish, and the
entries they would have added are counted as dropped."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One finished job as the hand-off holds it: its stream id and the job's fields."""

    entry_id: str
    fields: dict[str, str]


@dataclass(frozen=True, slots=True)
class Backlog:
    """The state of one queue's hand-off."""

    enabled: bool
    max_entries: int | None
    entries: int
    """Entries not yet stored (read or not)."""
    pending: int
    """Entries read by an archiver and not yet acknowledged."""
    dropped: int
    """Entries refused since history was turned on, because the hand-off was full."""
    oldest_ms: int | None
    """When the oldest entry was added (ms since the epoch), if there is one."""


def enable(
    keys: QueueKeys, max_entries: int = DEFAULT_MAX_ENTRIES, *, replace: bool = False
) -> Generator[Step, Any, int]:
    """Turn the queue's history on: from now, each job that ends is handed off; returns the
    bound in force. Without ``replace``, a bound set before (by an operator, or another
    archiver) is kept."""
    if max_entries < 1:
        raise ValueError("the hand-off must hold at least one entry")
    reply = yield Script(HISTORY_ON, keys.for_history_on, (max_entries, GROUP, 1 if replace else 0))
    return int(reply)


def disable(keys: QueueKeys) -> Generator[Step, Any, None]:
    """Turn the queue's history off: jobs that end from now are not handed off. What the
    hand-off holds stays until archivers have stored it."""
    yield Command(("HDEL", keys.history_feed, "max"))


def backlog(keys: QueueKeys) -> Generator[Step, Any, Backlog]:
    feed = yield Command(("HMGET", keys.history_feed, "max", "dropped"))
    length = yield Command(("XLEN", keys.history))
    pending = 0
    if length:
        summary = yield Command(("XPENDING", keys.history, GROUP))
        pending = int(summary[0]) if summary else 0
    first = yield Command(("XRANGE", keys.history, "-", "+", "COUNT", 1))
    oldest = int(str(first[0][0]).split("-")[0]) if first else None
    return Backlog(
        enabled=feed[0] is not None,
        max_entries=int(feed[0]) if feed[0] is not None else None,
        entries=int(length),
        pending=pending,
        dropped=int(feed[1] or 0),
        oldest_ms=oldest,
    )


def _entries(raw: Any) -> list[Entry]:
    return [Entry(str(entry_id), as_dict(fields)) for entry_id, fields in raw if fields is not None]


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
    # Entries deleted meanwhile come back with no fields (Redis 7 lists them apart, too).
    return _entries(reply[1])


def archived(keys: QueueKeys, entry_ids: Sequence[str]) -> Generator[Step, Any, int]:
    """Acknowledge and delete entries the store has committed; how many were still pending."""
    if not entry_ids:
        return 0
    reply = yield Script(ARCHIVED, keys.for_archived, (GROUP, *entry_ids))
    return int(reply)

"""The one place that spells Redis key names.

Every key of one queue carries the queue name as a hash tag (``{name}``), so all of them
live in the same Redis Cluster slot and a single Lua script may touch any of them.
Scripts receive these keys through KEYS, each script's as one NamedTuple that names them
(:mod:`.script_keys`, built once per queue here); keys built inside a script (a job's hash)
are built from :attr:`QueueKeys.job_prefix`, which carries the same tag.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import cached_property
from typing import Any, NamedTuple, TypeVar

from .script_keys import (
    ArchivedKeys,
    CancelKeys,
    ChildKeys,
    ClaimKeys,
    CompleteKeys,
    CountsKeys,
    EnqueueKeys,
    EnqueuePlainKeys,
    ExtendKeys,
    FailKeys,
    FiguresKeys,
    HistoryOnKeys,
    ListKeys,
    NotRunningKeys,
    PromoteKeys,
    RequeueKeys,
    RetryKeys,
    ScheduleKeys,
    SweepKeys,
)

DEFAULT_PREFIX = "cv"

_Layout = TypeVar("_Layout", bound=NamedTuple)


def _layout(kind: type[_Layout]) -> cached_property[_Layout]:
    """A script's KEYS for one queue (see :mod:`.script_keys`): each field holds the
    attribute of the same name, built on first use and kept on the instance."""
    fields = kind._fields

    def build(keys: Any) -> _Layout:
        return kind._make(getattr(keys, field) for field in fields)

    return cached_property(build)


def addressable(names: Iterable[str], refused: Callable[[ValueError], object]) -> list[str]:
    """The registered queue names a client can address today. One registered before '/', '.'
    and '..' were refused cannot be read through the client any more (nor named in a URL):
    ``refused`` hears of it, and the rest of the listing goes on without it."""
    valid = []
    for name in names:
        try:
            valid.append(validate_queue_name(name))
        except ValueError as exc:
            refused(exc)
    return valid


def validate_queue_name(name: str) -> str:
    """Return ``name`` if it can be used as a queue name, else raise ``ValueError``.

    Braces would break the hash tag, and whitespace makes the CLI and logs ambiguous. The
    name must also be addressable as one segment of the HTTP API's paths
    (``/v1/queues/{queue}``): a ``/`` splits the segment even when sent as ``%2F``, and
    clients resolve a segment of ``.`` or ``..`` away before sending.
    """
    if not name or len(name) > 200:
        raise ValueError("queue name must be 1 to 200 characters long")
    if any(ch in name for ch in "{}/") or any(ch.isspace() or not ch.isprintable() for ch in name):
        raise ValueError(
            f"queue name {name!r} must not contain braces, '/', whitespace or control characters"
        )
    if name in (".", ".."):
        raise ValueError(f"queue name {name!r} cannot be used: URLs resolve it to another path")
    return name


class QueueKeys:
    """Key names of one queue, and the KEYS of each script, computed once (they are on
    every hot path)."""

    __slots__ = (
        "__dict__",  # the scripts' KEYS layouts below, each built on first use
        "active",
        "base",
        "cancelled",
        "completed",
        "dedup_prefix",
        "delayed",
        "done_prefix",
        "events",
        "failed",
        "flows",
        "group_prefix",
        "history",
        "history_feed",
        "job_prefix",
        "lease_clock",
        "logs_prefix",
        "marker",
        "metrics_prefix",
        "outbox",
        "parents",
        "prefix",
        "prioritized",
        "queue",
        "rate",
        "schedule_marker",
        "schedule_next",
        "schedules",
        "sequence",
        "settings",
        "suspects",
        "waiting",
    )

    def __init__(self, queue: str, prefix: str = DEFAULT_PREFIX) -> None:
        self.queue = queue
        self.prefix = prefix
        self.base = base = f"{prefix}:{{{queue}}}:"
        self.waiting = base + "waiting"
        """LIST of job ids with priority 0, pushed on the left, popped on the right."""
        self.prioritized = base + "prioritized"
        """ZSET of waiting job ids with a non-zero priority, score from priority and sequence."""
        self.suspects = base + "suspects"
        """ZSET of waiting jobs that lost their worker too often to run beside others: each is
        handed out alone, to a worker that holds nothing (see ``scripts/claim.lua``). Scored
        by when a busy worker was last asked to make room for it (ms)."""
        self.delayed = base + "delayed"
        """ZSET of job ids scored by the time (ms) they become due."""
        self.active = base + "active"
        """ZSET of claimed job ids scored by their lease deadline (ms)."""
        self.lease_clock = base + "lease_clock"
        """HASH: when a worker last reached the queue's leases (``seen``, ms), and the last
        silence in which none could (``from``, ``to``): leases that ran out in it are not
        re-delivered for a lease's time after it (see ``lease_contact`` in
        ``scripts/include/common.lua``)."""
        self.completed = base + "completed"
        """ZSET of completed job ids scored by finish time (ms)."""
        self.failed = base + "failed"
        """ZSET of dead-lettered job ids scored by finish time (ms)."""
        self.cancelled = base + "cancelled"
        """ZSET of cancelled job ids scored by the time they were cancelled (ms)."""
        self.events = base + "events"
        """STREAM of lifecycle events (ids and small fields), capped at about 10,000 entries."""
        self.settings = base + "settings"
        """HASH of the queue's own limits: paused, concurrency, rate_max, rate_ms."""
        self.schedules = base + "schedules"
        """HASH of repeatable-job specs by name (JSON)."""
        self.schedule_next = base + "schedule_next"
        """ZSET of schedule names scored by their next tick (ms)."""
        self.schedule_marker = base + "schedule_marker"
        """ZSET holding at most one member, set when a schedule is added or changed; the
        workers' schedulers block on it (BZPOPMIN) to learn of it before their next look."""
        self.parents = base + "parents"
        """ZSET of jobs waiting for their children (flows), scored by creation time (ms)."""
        self.outbox = base + "outbox"
        """LIST of notes for parents in flows: a child of this queue finished (see child.lua)."""
        self.history = base + "history"
        """STREAM: the history hand-off. While the queue's history is on, each job that ends
        leaves a copy of its fields here, in the same script, until an archiver has stored it
        in the history database (see ``scripts/include/history.lua``)."""
        self.history_feed = base + "history_feed"
        """HASH: ``max`` entries the hand-off may hold (history is off without it), ``dropped``
        entries refused because it was full."""
        self.metrics_prefix = base + "metrics:"
        """Prefix of the HASHes of the queue's figures, kept by the scripts (jobs completed,
        failed, retried, cancelled; wait and run time histograms): ``all`` since the queue
        began, and one per minute for a day (see ``scripts/include/metrics.lua``)."""
        self.flows = base + "flows"
        """HASH of flows being created across queues (id -> nodes), replayed if the creator died."""
        self.rate = base + "rate"
        """Counter of jobs started in the current rate-limit window (expires with the window)."""
        self.marker = base + "marker"
        """ZSET holding at most one member; workers block on it (BZPOPMIN) to learn of new work."""
        self.sequence = base + "seq"
        """Counter for priority FIFO order and fencing tokens."""
        self.job_prefix = base + "job:"
        """Prefix of the HASH with one job's data."""
        self.group_prefix = base + "grp:"
        """Prefix of the keys of grouped jobs (see ``scripts/include/common.lua``): ``ring``,
        ``active``, ``limited``, ``known``, ``turn``, and per group ``q:<group>``, ``r:<group>``."""
        self.done_prefix = base + "done:"
        """Prefix of the LIST a client blocks on while it waits for a job to finish."""
        self.dedup_prefix = base + "dedup:"
        """Prefix of the STRING naming the job that holds a deduplication key."""
        self.logs_prefix = base + "logs:"
        """Prefix of the capped LIST of log lines a job wrote while it ran."""

    # The KEYS of each script that works on the queue as a whole, by name (see script_keys.py).
    for_enqueue_plain = _layout(EnqueuePlainKeys)
    for_enqueue = _layout(EnqueueKeys)
    for_claim = _layout(ClaimKeys)
    for_complete = _layout(CompleteKeys)
    for_fail = _layout(FailKeys)
    for_extend = _layout(ExtendKeys)
    for_sweep = _layout(SweepKeys)
    for_requeue = _layout(RequeueKeys)
    for_retry = _layout(RetryKeys)
    for_remove = _layout(NotRunningKeys)
    for_purge = _layout(NotRunningKeys)
    for_cancel = _layout(CancelKeys)
    for_promote = _layout(PromoteKeys)
    for_schedule = _layout(ScheduleKeys)
    for_counts = _layout(CountsKeys)
    for_figures = _layout(FiguresKeys)
    for_list = _layout(ListKeys)
    for_child = _layout(ChildKeys)
    for_archived = _layout(ArchivedKeys)
    for_history_on = _layout(HistoryOnKeys)

    def __repr__(self) -> str:
        return f"QueueKeys({self.queue!r}, {self.prefix!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, QueueKeys) and (self.queue, self.prefix) == (other.queue, other.prefix)

    def __hash__(self) -> int:
        return hash((self.queue, self.prefix))

    def job(self, job_id: str) -> str:
        return self.job_prefix + job_id

    def done(self, job_id: str) -> str:
        return self.done_prefix + job_id

    def logs(self, job_id: str) -> str:
        return self.logs_prefix + job_id


def queues_key(prefix: str = DEFAULT_PREFIX) -> str:
    """SET of known queue names. Outside any queue's slot, so never touched by a script."""
    return f"{prefix}:queues"


def workers_key(prefix: str = DEFAULT_PREFIX) -> str:
    """ZSET of worker ids scored by their last heartbeat (ms)."""
    return f"{prefix}:workers"


def worker_key(worker_id: str, prefix: str = DEFAULT_PREFIX) -> str:
    """HASH describing one worker; expires when its heartbeats stop."""
    return f"{prefix}:worker:{worker_id}"

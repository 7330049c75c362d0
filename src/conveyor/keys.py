"""The one place that spells Redis key names.

Every key of one queue carries the queue name as a hash tag (``{name}``), so all of them
live in the same Redis Cluster slot and a single Lua script may touch any of them.
Scripts receive these keys through KEYS; keys built inside a script (a job's hash) are
built from :attr:`QueueKeys.job_prefix`, which carries the same tag.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "cv"


def validate_queue_name(name: str) -> str:
    """Return ``name`` if it can be used as a queue name, else raise ``ValueError``.

    Braces would break the hash tag, and whitespace makes the CLI and logs ambiguous.
    """
    if not name or len(name) > 200:
        raise ValueError("queue name must be 1 to 200 characters long")
    if any(ch in name for ch in "{}") or any(ch.isspace() for ch in name):
        raise ValueError(f"queue name {name!r} must not contain braces or whitespace")
    return name


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """Key names of one queue."""

    queue: str
    prefix: str = DEFAULT_PREFIX

    @property
    def base(self) -> str:
        return f"{self.prefix}:{{{self.queue}}}:"

    @property
    def waiting(self) -> str:
        """LIST of job ids with priority 0, pushed on the left, popped on the right."""
        return self.base + "waiting"

    @property
    def prioritized(self) -> str:
        """ZSET of waiting job ids with a non-zero priority, score from priority and sequence."""
        return self.base + "prioritized"

    @property
    def delayed(self) -> str:
        """ZSET of job ids scored by the time (ms) they become due."""
        return self.base + "delayed"

    @property
    def active(self) -> str:
        """ZSET of claimed job ids scored by their lease deadline (ms)."""
        return self.base + "active"

    @property
    def completed(self) -> str:
        """ZSET of completed job ids scored by finish time (ms)."""
        return self.base + "completed"

    @property
    def failed(self) -> str:
        """ZSET of dead-lettered job ids scored by finish time (ms)."""
        return self.base + "failed"

    @property
    def marker(self) -> str:
        """ZSET holding at most one member; workers block on it (BZPOPMIN) to learn of new work."""
        return self.base + "marker"

    @property
    def sequence(self) -> str:
        """Counter for priority FIFO order and fencing tokens."""
        return self.base + "seq"

    @property
    def job_prefix(self) -> str:
        return self.base + "job:"

    def job(self, job_id: str) -> str:
        """HASH with one job's data."""
        return self.job_prefix + job_id

    def done(self, job_id: str) -> str:
        """LIST a client blocks on while it waits for this job to finish."""
        return self.base + "done:" + job_id


def queues_key(prefix: str = DEFAULT_PREFIX) -> str:
    """SET of known queue names. Outside any queue's slot, so never touched by a script."""
    return f"{prefix}:queues"


def workers_key(prefix: str = DEFAULT_PREFIX) -> str:
    """ZSET of worker ids scored by their last heartbeat (ms)."""
    return f"{prefix}:workers"


def worker_key(worker_id: str, prefix: str = DEFAULT_PREFIX) -> str:
    """HASH describing one worker; expires when its heartbeats stop."""
    return f"{prefix}:worker:{worker_id}"

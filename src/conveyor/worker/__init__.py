"""The worker: claims jobs, runs many at once, acknowledges them, and keeps its leases.

Along the path of one job: :mod:`.engine` (serve, fetch, run), :mod:`.outcome` (decode a
claimed job, decide its outcome), :mod:`.acks` (results back to Redis in batches),
:mod:`.heartbeat` (lease renewal from its own thread), :mod:`.sweeper` (jobs of lost
workers come back), :mod:`.scheduler` (repeatable jobs), :mod:`.supervisor` (several
processes), :mod:`.isolation` (a job in a child process).
"""

from .engine import Worker, WorkerSettings

__all__ = ["Worker", "WorkerSettings"]

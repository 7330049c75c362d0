"""The worker: claims jobs, runs many at once, acknowledges them, and keeps its leases.

Along the path of one job: :mod:`.fetch` (claim jobs for free slots, wait for work),
:mod:`.run` (run each job, decide its outcome with :mod:`.outcome`), :mod:`.acks` (outcomes
back to Redis in batches). Around it: :mod:`.engine` (the ``Worker``: start, the loops, stop, in
the :mod:`.phases` of its life), :mod:`.settings` (``WorkerSettings``), :mod:`.held` (the jobs
it holds a lease on), :mod:`.heartbeat` (lease renewal from its own thread), :mod:`.sweeper`
(jobs of lost workers come back), :mod:`.scheduler` (repeatable jobs), :mod:`.supervisor`
(several processes, :mod:`.children` dying with it), :mod:`.isolation` (a job in a child process).
"""

from .engine import Worker
from .settings import WorkerOptions, WorkerSettings

__all__ = ["Worker", "WorkerOptions", "WorkerSettings"]

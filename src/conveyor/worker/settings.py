"""How a worker behaves: :class:`WorkerSettings`, a frozen value, and :class:`WorkerOptions`, the
same fields as typed keyword arguments of :class:`~conveyor.Worker`.

One precedence: a keyword argument of ``Worker`` wins over the field of the same name in
``worker_settings=``, which wins over the default. Only the keywords given override, so an explicit
``threads=None`` still means the default number of threads whatever ``worker_settings`` said; an
unknown keyword raises ``TypeError``, as any unknown argument does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypedDict

from .. import ops


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """How a worker behaves. Times are in seconds."""

    concurrency: int = 100
    """Jobs run at once by this process."""
    threads: int | None = None
    """Threads for sync tasks; default ``min(concurrency, 64)``."""
    lease: float = 10.0
    """How long a claimed job stays ours without a heartbeat. A job of a dead worker is
    re-delivered within ``lease + sweep_interval``."""
    sweep_interval: float = 5.0
    max_crashes: int = 3
    """A job whose worker was lost this many times is dead-lettered instead of re-delivered."""
    alone_after: int | None = None
    """A job whose worker was lost this many times runs only alone from then on: handed to a
    worker that holds no other job, which claims nothing more while it runs, so a job that
    kills its worker takes no other job with it. Default ``max_crashes - 1``: a job's last
    chance is always alone, so no job is dead-lettered for a crash another job caused; 1
    isolates every job of a lost worker, at the cost of running them one per worker."""
    make_room_after: float = 5.0
    """How long a job that must run alone waits for an idle worker before busy workers are
    asked, one more every ``make_room_after`` seconds, to stop claiming until they are idle
    (or no such job waits any more)."""
    shutdown_grace: float = 30.0
    """On SIGTERM, how long running jobs may take before they are handed back to waiting."""
    burst: bool = False
    """Drain the queues, then exit."""
    completed: ops.Retention = field(default_factory=lambda: ops.Retention(10_000, 24 * 3600 * 1000))
    """Completed jobs kept per queue: at most this many, for at most this long (ms)."""
    failed: ops.Retention = field(default_factory=lambda: ops.Retention(100_000, 7 * 24 * 3600 * 1000))
    """Dead-lettered jobs kept per queue."""
    # Last, so that positional construction of the fields above still works.
    max_loop_block: float | None = None
    """How long the event loop may go without running before the worker counts as hung and
    stops renewing its leases, so that its jobs are re-delivered; default ``10 * lease``, at
    least 60 s. Leases are renewed from a thread, so async jobs that block the loop for less
    than this (one after another, too) do not lose their leases. A loop starved of the GIL by
    many threads busy in pure Python counts as blocked too, hence the generous default."""
    history_url: str | None = None
    """Archive the jobs of the worker's queues that finish into this history store
    (``postgresql://...`` or ``sqlite:///path``; see :mod:`conveyor.history`), turning their
    history on. Any number of workers may archive; None: this worker does not."""
    metrics_port: int | None = None
    """Serve this process's metrics at ``/metrics`` (Prometheus text) and its liveness at
    ``/livez`` on this port, from a thread of the worker (0: any free port, see
    ``Worker.metrics_address``); None: no metrics, and the job path pays nothing for them."""
    metrics_host: str = "127.0.0.1"
    """The address the metrics port listens on; ``0.0.0.0`` to let Prometheus in from
    elsewhere (a pod's IP, another host)."""

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.lease < 1:
            raise ValueError("lease must be at least 1 second")
        if self.alone_after is not None and self.alone_after < 1:
            raise ValueError("alone_after must be at least 1")
        if self.make_room_after < 0:
            raise ValueError("make_room_after must not be negative")
        if self.max_loop_block is not None and self.max_loop_block <= 0:
            raise ValueError("max_loop_block must be positive")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError("metrics_port must be a port number (0: any free port)")


class WorkerOptions(TypedDict, total=False):
    """The fields of :class:`WorkerSettings` as keyword arguments of ``Worker`` (see there for
    what each means); a test keeps the two in step."""

    concurrency: int
    threads: int | None
    lease: float
    sweep_interval: float
    max_crashes: int
    alone_after: int | None
    make_room_after: float
    shutdown_grace: float
    burst: bool
    completed: ops.Retention
    failed: ops.Retention
    max_loop_block: float | None
    history_url: str | None
    metrics_port: int | None
    metrics_host: str

"""A worker's entry in the registry of live workers (``conveyor workers``, the API's worker list).

The entry is written when the worker starts, refreshed by every heartbeat beat (with the lease
renewals, in the same round trip), expires after three leases without one, and is removed when
the worker stops. It shows where the worker runs, what it serves, and its counters.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Generator, Sequence
from typing import Any

from .. import ops
from ..ops import workers as registry
from ..ops.keys import worker_key, workers_key
from ..redis.executors import AsyncExecutor
from .run import JobRunner

log = logging.getLogger("conveyor.worker")


class Registration:
    """The registry entry of one worker; its counters are read from the runner."""

    def __init__(
        self,
        *,
        worker_id: str,
        host: str,
        queues: Sequence[str],
        concurrency: int,
        lease: float,
        prefix: str,
        runner: JobRunner,
    ) -> None:
        self.worker_id = worker_id
        self.host = host
        self.queues = ",".join(queues)
        self.concurrency = concurrency
        self.ttl_ms = int(lease * 3000)
        self.workers_key = workers_key(prefix)
        self.worker_key = worker_key(worker_id, prefix)
        self.runner = runner
        self.started: int | None = None

    def operations(self) -> list[Generator[ops.Step, Any, None]]:
        """The entry as operations; also called from the heartbeat thread, which only reads
        the counters here."""
        now = int(time.time() * 1000)
        if self.started is None:
            self.started = now
        info = {
            "host": self.host,
            "pid": os.getpid(),
            "queues": self.queues,
            "concurrency": self.concurrency,
            "started": self.started,
            "processed": self.runner.processed,
            "failed": self.runner.failed,
            "busy": self.runner.busy,
        }
        return registry.heartbeat(self.workers_key, self.worker_key, self.worker_id, info, self.ttl_ms, now)

    async def register(self, executor: AsyncExecutor) -> None:
        """Write the worker's entry in the registry."""
        for operation in self.operations():
            await executor.run(operation)

    async def unregister(self, executor: AsyncExecutor) -> None:
        await executor.run(registry.unregister(self.workers_key, self.worker_key, self.worker_id))

"""The jobs a worker holds a lease on, per queue: running, or finished and waiting for their
acknowledgement.

Held jobs are kept by *attempt*: by the fencing token of the claim (unique within a queue),
not by job id. One job can have two attempts in one worker: after an outage longer than the
lease, or a stall, the sweep re-delivers a job its worker still runs, and that worker may be
the one to claim it again. Everything that ends an attempt -- its release, its acknowledgement,
a lost lease -- names the attempt, so an old attempt cannot clear a newer one's entry (which
left the newer attempt unrenewed until it too was re-delivered, three times, and dead-lettered
as "worker lost" with the worker alive throughout).

An attempt is held from its claim until Redis took (or refused) its outcome
(:meth:`HeldJobs.settled`), its lease was lost to a newer attempt, or the worker stopped and
handed it back (:meth:`HeldJobs.hand_back`). Only the event loop changes the held jobs; the
heartbeat thread renews the lease of each (see :mod:`conveyor.worker.heartbeat` for how it
reads them safely).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from .. import ops
from ..ops.keys import QueueKeys
from ..redis.executors import AsyncExecutor
from .outcome import Prepared

log = logging.getLogger("conveyor.worker")


@dataclass(slots=True)
class Held:
    """An attempt this worker holds a lease on: running, or finished and waiting for its ack.
    Kept under its fencing token."""

    job_id: str
    job: Prepared | None = None
    task: asyncio.Future[Any] | None = None
    """Set while the job runs."""


class HeldJobs:
    """The held jobs of one worker, ``{queue: {token: Held}}``, and the event the fetch loop
    waits on for room to claim more."""

    __slots__ = ("alone", "by_queue", "slot_freed")

    def __init__(self, queues: Sequence[str]) -> None:
        self.by_queue: dict[str, dict[str, Held]] = {q: {} for q in queues}
        self.slot_freed = asyncio.Event()
        """Set when a running job ends, or (while ``alone``) when the last held job settles."""
        self.alone = False
        """Claim nothing until this worker holds no job: it runs a suspect, which must run
        alone, or was told to make room for one (see ``scripts/claim.lua``)."""

    def __getitem__(self, queue: str) -> dict[str, Held]:
        return self.by_queue[queue]

    def holds_any(self) -> bool:
        """True while any job is running here or waits for its acknowledgement."""
        return any(self.by_queue.values())

    def running(self) -> list[asyncio.Future[Any]]:
        return [h.task for held in self.by_queue.values() for h in held.values() if h.task is not None]

    def attempt_of(self, queue: str, job_id: str) -> str | None:
        """The token under which this worker holds ``job_id``, if it does. A scan: it is asked
        only when a job comes back (a claim of attempt 2 or later), and few jobs are held."""
        for token, held in self.by_queue[queue].items():
            if held.job_id == job_id:
                return token
        return None

    def settled(self, queue: str, tokens: list[str]) -> None:
        """Redis took (or refused) these attempts' outcomes: they are no longer this worker's."""
        held = self.by_queue[queue]
        for token in tokens:
            held.pop(token, None)
        if self.alone and not self.holds_any():
            self.slot_freed.set()  # the fetch loop waits for this to claim again

    async def hand_back(self, executor: AsyncExecutor, keys: Mapping[str, QueueKeys]) -> None:
        """Requeue every job still held (running when we stopped), at once, not after lease expiry."""
        for queue, held in self.by_queue.items():
            pairs = [(h.job_id, token) for token, h in held.items()]
            if pairs:
                try:
                    count = await executor.run(ops.requeue(keys[queue], pairs))
                    log.info("handed %d unfinished jobs of %s back to waiting", count, queue)
                except RedisError as exc:
                    log.error(
                        "could not hand %d jobs back (%s); they return after their lease expires",
                        len(pairs),
                        exc,
                    )
                held.clear()

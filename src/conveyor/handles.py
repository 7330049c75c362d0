"""Job handles: what an enqueue returns, to follow the job it made (or found).

A handle is made for every job of a bulk enqueue, so it is a slotted object holding only
the job's coordinates and its client; it reads nothing until asked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic

from .job import EnqueueOutcome, Job
from .ops.enqueue import Enqueued
from .task import R

if TYPE_CHECKING:
    from .client import AsyncClient, Client


class JobHandle(Generic[R]):
    """What ``Client.enqueue`` returns: the job's id, whether it was created, and ways to follow it."""

    __slots__ = ("client", "id", "outcome", "queue", "replaced")  # one per job of a bulk

    def __init__(self, client: Client, enqueued: Enqueued) -> None:
        self.client = client
        self.id = enqueued.id
        """The job's id: the new job's, or for EXISTED/DUPLICATE the existing job's."""
        self.queue = enqueued.queue
        self.outcome = enqueued.outcome
        """CREATED, EXISTED (the given job_id was taken) or DUPLICATE (the dedup key matched)."""
        self.replaced = enqueued.replaced
        """With ``debounce``: the id of the waiting job this one replaced (now cancelled)."""

    @property
    def created(self) -> bool:
        """False when the id or the dedup key matched an existing job (``id`` names it):
        nothing new was enqueued. ``outcome`` says which."""
        return self.outcome is EnqueueOutcome.CREATED

    def fetch(self) -> Job:
        """A fresh snapshot of the job."""
        return self.client.get_job(self.queue, self.id)

    def result(self, timeout: float | None = None) -> R:
        """Block until the job finishes and return its result; raises ``JobFailed`` or ``ResultTimeout``.

        Waits in Redis (BLPOP), not by polling. ``timeout=None`` waits forever.
        """
        return self.client.wait_result(self.queue, self.id, timeout)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"<JobHandle {self.queue}/{self.id} {self.outcome.value}>"


class AsyncJobHandle(Generic[R]):
    """The asyncio twin of :class:`JobHandle`."""

    __slots__ = ("client", "id", "outcome", "queue", "replaced")

    def __init__(self, client: AsyncClient, enqueued: Enqueued) -> None:
        self.client = client
        self.id = enqueued.id
        self.queue = enqueued.queue
        self.outcome = enqueued.outcome
        self.replaced = enqueued.replaced

    @property
    def created(self) -> bool:
        return self.outcome is EnqueueOutcome.CREATED

    async def fetch(self) -> Job:
        return await self.client.get_job(self.queue, self.id)

    async def result(self, timeout: float | None = None) -> R:
        return await self.client.wait_result(self.queue, self.id, timeout)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"<AsyncJobHandle {self.queue}/{self.id} {self.outcome.value}>"

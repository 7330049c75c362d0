"""Writing new jobs: one script per batch, many batches in one pipeline, WAIT for replicas."""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import NotDurable
from ..job import EnqueueOutcome
from .keys import QueueKeys
from .scripts import load
from .steps import Command, Pipeline, Script, Step

ENQUEUE = load("enqueue")


ENQUEUE_PLAIN = load("enqueue_plain")


@dataclass(slots=True)  # not frozen: made once per job, and frozen init costs 3x
class NewJob:
    """A job ready to be written: encoded and validated by :mod:`conveyor.ops.encode`."""

    id: str
    task: str
    args: bytes
    extras: tuple[Any, ...] = ()
    """Optional fields as a flat name/value sequence ('k' kwargs JSON, 'p' priority, ...):
    made by :mod:`conveyor.ops.encode`, named in the legend atop ``scripts/include/common.lua``."""


@dataclass(slots=True)  # not frozen: made once per job, and frozen init costs 3x
class Enqueued:
    id: str
    """The job this enqueue stands for: the new one, or the existing one it matched."""
    queue: str
    outcome: EnqueueOutcome
    replaced: str | None = None
    """With debounce: the not-yet-started job this one replaced (now cancelled)."""
    identical: bool = False
    """EXISTED, and that job has the same task and arguments as this enqueue."""


def enqueue(keys: QueueKeys, jobs: Sequence[NewJob]) -> Generator[Step, Any, list[Enqueued]]:
    notes = yield enqueue_script(keys, jobs)
    return enqueue_outcomes(keys, jobs, notes)


def enqueue_chunks(
    chunks: Iterable[tuple[QueueKeys, Sequence[NewJob]]],
) -> Generator[Step, Any, list[list[Enqueued]]]:
    """Write many chunks of jobs in one pipeline (a bulk enqueue); outcomes per chunk.

    ``chunks`` is consumed lazily, one chunk as each is sent (see :class:`Pipeline`).
    """
    sent: list[tuple[QueueKeys, Sequence[NewJob]]] = []

    def scripts() -> Iterator[Script]:
        for keys, jobs in chunks:
            sent.append((keys, jobs))
            yield enqueue_script(keys, jobs)

    def outcomes(index: int, notes: Sequence[Any]) -> list[Enqueued]:
        keys, jobs = sent[index]
        return enqueue_outcomes(keys, jobs, notes)

    written: list[list[Enqueued]] = yield Pipeline(scripts(), outcomes)
    return written


def enqueue_script(keys: QueueKeys, jobs: Sequence[NewJob]) -> Script:
    args: list[Any] = []
    if not any(job.extras for job in jobs):  # the common case has its own, leaner script
        for job in jobs:
            args += (job.id, job.task, job.args)
        return Script(ENQUEUE_PLAIN, keys.for_enqueue_plain, args)
    for job in jobs:
        args += (job.id, job.task, job.args, len(job.extras) // 2, *job.extras)
    return Script(ENQUEUE, keys.for_enqueue, args)


def enqueue_outcomes(keys: QueueKeys, jobs: Sequence[NewJob], notes: Sequence[Any]) -> list[Enqueued]:
    results = [Enqueued(job.id, keys.queue, EnqueueOutcome.CREATED) for job in jobs]
    for i in range(0, len(notes), 3):
        index, kind, other = int(notes[i]) - 1, notes[i + 1], notes[i + 2]
        if kind in ("existed", "identical"):
            same = kind == "identical"
            results[index] = Enqueued(other, keys.queue, EnqueueOutcome.EXISTED, identical=same)
        elif kind == "duplicate":
            results[index] = Enqueued(other, keys.queue, EnqueueOutcome.DUPLICATE)
        else:
            results[index] = Enqueued(jobs[index].id, keys.queue, EnqueueOutcome.CREATED, replaced=other)
    return results


def wait_replicas(enqueued: Sequence[Enqueued], replicas: int, timeout_ms: int) -> Generator[Step, Any, None]:
    """WAIT until ``replicas`` replicas have the writes of this connection; raise NotDurable if not.

    Must run on the connection that made the writes (the client pins one for this).
    """
    acknowledged = int((yield Command(("WAIT", replicas, timeout_ms))))
    if acknowledged < replicas:
        ids = [e.id for e in enqueued]
        raise NotDurable(
            f"{len(ids)} jobs reached the primary, but only {acknowledged} of {replicas} replicas "
            f"acknowledged them within {timeout_ms} ms; they are lost if the primary fails now",
            ids,
            acknowledged,
            replicas,
        )

"""The phases of a worker, from :meth:`Worker.serve <conveyor.Worker.serve>` to its end.

One value says where a worker is, and only moves forward:

``STARTING``
    ``serve()`` runs the tasks' startup functions, connects, registers the worker (retrying
    while Redis cannot be reached) and starts the heartbeat thread. Nothing is claimed yet.
``RUNNING``
    The loops run: the fetch loop claims, jobs run, the flush loop acknowledges, the sweep and
    scheduler loops go round.
``DRAINING``
    :meth:`~conveyor.Worker.stop` was called: by the first SIGTERM/SIGINT, by burst mode once
    its queues are drained, or by a loop that failed. Nothing more is claimed; running jobs get
    ``shutdown_grace`` seconds, then are cancelled and handed back; their outcomes are written.
    The heartbeat, the sweep and the scheduler go on meanwhile: running jobs keep their leases,
    and the lost jobs of other workers still come back.
``STOPPING``
    Every outcome is written. The sweep and scheduler loops end after the command they are in
    (given 5 s, then cancelled), the heartbeat stops, the jobs still held are handed back to
    waiting, the worker leaves the registry, the shutdown functions run, the connection closes.
    (Sync jobs abandoned to their threads, see below, are handed back last instead, after the
    shutdown functions: just before the process should end.)
``STOPPED``
    ``serve()`` returned, or raised the error that ended one of its loops.

A stop during ``STARTING`` -- ``stop()``, a signal -- ends it at once, also while the worker
waits for Redis to register: the step under way is cancelled, what was opened is closed again
(the shutdown functions run if every startup function did), and ``serve()`` returns without
claiming anything.

A stop *at once* -- ``stop(at_once=True)``, or a second signal, in any phase -- cancels the
running jobs, which are handed back to waiting, and gives each later step that waits on Redis
(outcomes, the hand-back, leaving the registry) ``HURRY`` seconds at most. An async job stops
at its next ``await``. A sync job's thread cannot be stopped: it is flagged
(``current_job().cancelled``), its outcome discarded, and it counts in ``Worker.abandoned``;
``conveyor worker`` then ends its process once the jobs are handed back instead of waiting for
the thread, so that no job handed back still runs.

Each phase has an :class:`asyncio.Event`, set once the phase is reached: ``serve()`` waits for
``DRAINING`` (while starting too), the sweep and scheduler loops for ``STOPPING``.
"""

from __future__ import annotations

import asyncio
import enum


class Phase(enum.IntEnum):
    """Where a worker is in its life; ordered, so ``phase >= Phase.DRAINING`` reads as "stopping"."""

    STARTING = 1
    RUNNING = 2
    DRAINING = 3
    STOPPING = 4
    STOPPED = 5


class Phases:
    """The current :class:`Phase` of one worker, and the event of each phase."""

    __slots__ = ("_reached", "current")

    def __init__(self) -> None:
        self.current = Phase.STARTING
        self._reached = {phase: asyncio.Event() for phase in Phase}
        self._reached[Phase.STARTING].set()

    def advance(self, phase: Phase) -> None:
        """Move on to ``phase``, and through any phase skipped on the way; never back."""
        if phase <= self.current:
            return
        self.current = phase
        for each in Phase:
            if each <= phase:
                self._reached[each].set()

    def reached(self, phase: Phase) -> asyncio.Event:
        """Set once the worker reached ``phase`` (or a later one)."""
        return self._reached[phase]

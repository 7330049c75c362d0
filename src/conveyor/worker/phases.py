"""The phases of a worker, from :meth:`Worker.serve <conveyor.Worker.serve>` to its end.

One value says where a worker is, and only moves forward:

``STARTING``
    ``serve()`` runs the tasks' startup functions, connects, registers the worker and starts
    the heartbeat thread. Nothing is claimed yet.
``RUNNING``
    The loops run: the fetch loop claims, jobs run, the flush loop acknowledges, the sweep and
    scheduler loops go round.
``DRAINING``
    :meth:`~conveyor.Worker.stop` was called: by the first SIGTERM/SIGINT, by burst mode once
    its queues are drained, or by a loop that failed. Nothing more is claimed; running jobs get
    ``shutdown_grace`` seconds, then are cancelled and handed back (a second signal cancels them
    at once); their outcomes are written. The heartbeat, the sweep and the scheduler go on
    meanwhile: running jobs keep their leases, and the lost jobs of other workers still come back.
``STOPPING``
    Every outcome is written. The sweep and scheduler loops end after the command they are in
    (given 5 s, then cancelled), the heartbeat stops, the jobs still held are handed back to
    waiting, the worker leaves the registry, the shutdown functions run, the connection closes.
``STOPPED``
    ``serve()`` returned, or raised the error that ended one of its loops.

A ``stop()`` during ``STARTING`` is kept: the worker finishes starting, then stops before it
claims anything. Each phase has an :class:`asyncio.Event`, set once the phase is reached:
``serve()`` waits for ``DRAINING``, the sweep and scheduler loops for ``STOPPING``.
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

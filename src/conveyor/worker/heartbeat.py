"""Lease renewal from a thread of its own, so that nothing on the event loop can starve it.

A worker holds every job it claimed under a lease, renewed every third of the lease; a job
whose lease runs out is taken for the job of a dead worker and re-delivered. Renewing from
the event loop meant that async jobs blocking the loop -- each for less than a lease, but one
after another -- added up and starved the renewals, and their jobs were re-delivered while
they still ran (a *false stall*). Here a thread renews the leases over a connection of its own
(sync, one round trip per beat), so a blocked loop cannot delay it.

What the loop and the thread share, and how:

* **The held jobs.** The worker's ``{queue: {token: entry}}`` dicts, keyed by attempt (the
  fencing token), where each entry has the ``job_id``. Only the loop changes them. The thread
  reads a copy per queue per beat: copying an exact ``dict`` is one C call that runs no Python
  code, so it is atomic under the GIL (and under the dict's own lock in a free-threaded build).
  The outer dict's keys, the queues, never change.
* **Answers.** A lost lease (the job was re-delivered, a newer attempt owns it) and an abort
  (someone cancelled the running job) are handed to the loop with ``call_soon_threadsafe``,
  one callback per queue and beat, naming the attempts (tokens) they are about; the loop looks
  each up, since the attempt may have finished, or been fenced out, meanwhile.
* **Liveness of the loop.** The loop ticks a timestamp (a timer callback); the thread renews
  only while the loop ticked within ``max_loop_block`` seconds. A loop blocked for longer than
  that is taken for hung (a deadlock, an endless loop in an async task): renewing its leases
  forever would hold its jobs forever, so the thread stops and the jobs are re-delivered after
  their lease, as those of a dead worker are. Renewal resumes when the loop ticks again. The
  worker's entry in the registry (``conveyor workers``) follows the same rule.

The GIL: a sync job busy in pure Python holds it, but the interpreter makes the holder let go
every switch interval (5 ms by default) when another thread waits for it, so the heartbeat
thread gets its turn -- often after the other waiting threads: each time it takes the GIL
back (after its sleep, a send, a receive) it may wait several intervals. So a beat is one
round trip for all its renewals and the registry entry together: three waits for the GIL,
not two per command (ten such threads: a beat took 316 ms at the median with a round trip per
command, 91 ms with one). The loop waits for the GIL like any thread, so many busy threads slow
it too, and starting a claimed job can take seconds: the worker holds (and so renews) every job
of a claim before it starts any (``JobRunner.start_all`` in :mod:`conveyor.worker.run`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Generator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from .. import ops
from ..errors import RETRYABLE_REDIS_ERRORS
from ..ops.keys import QueueKeys
from ..redis.base import SyncTransport
from ..redis.executors import SyncExecutor

if TYPE_CHECKING:
    from ..metrics.worker import BeatFigures

log = logging.getLogger("conveyor.worker")

EXTEND_CHUNK = 1000
"""Jobs renewed per script call: bounds how long one call keeps Redis busy."""

Answers = list[str]
"""Fencing tokens: the attempts an answer of extend.lua is about."""


class Leased(Protocol):
    """A held attempt as the heartbeat sees it (kept under its fencing token): its job."""

    @property
    def job_id(self) -> str: ...


class Heartbeat:
    """Renews the leases of a worker's held jobs every ``lease / 3`` seconds from a thread.

    ``start`` and ``stop`` are called on the event loop. ``on_answers(queue, lost, aborted)``
    and ``on_failure(error)`` run on the loop; ``registration()`` builds the worker's registry
    heartbeat (one-step operations) and is called from the thread.
    """

    def __init__(
        self,
        transport: SyncTransport,
        loop: asyncio.AbstractEventLoop,
        held: Mapping[str, Mapping[str, Leased]],
        keys: Mapping[str, QueueKeys],
        *,
        lease: float,
        max_loop_block: float,
        registration: Callable[[], list[Generator[ops.Step, Any, None]]],
        on_answers: Callable[[str, Answers, Answers], None],
        on_failure: Callable[[BaseException], None],
        figures: BeatFigures | None = None,
    ) -> None:
        self.transport = transport
        self.loop = loop
        self.held = held
        self.keys = keys
        self.lease_ms = int(lease * 1000)
        self.interval = lease / 3
        self.max_loop_block = max_loop_block
        self.registration = registration
        self.on_answers = on_answers
        self.on_failure = on_failure
        self.figures = figures
        """The worker's metrics of the heartbeat, written by this thread alone; None: off."""
        # The loop's timer must come often enough to tell a loop blocked max_loop_block apart.
        self._tick_every = min(self.interval, max_loop_block / 4)
        self._last_tick = time.monotonic()
        self._tick_handle: asyncio.TimerHandle | None = None
        self._stopping = threading.Event()
        self._warm = asyncio.Event()
        """Set (on the loop) once the thread is warm. Not a wait in a thread of the loop's
        executor: a stop while Redis stays silent would leave that thread waiting, and the
        process's exit waits for the executor's threads (3-5 s after a stop during start)."""
        self._renewing = True
        self.thread = threading.Thread(target=self._run, name="conveyor-heartbeat", daemon=True)

    # ------------------------------------------------------------------ on the loop
    async def start(self, timeout: float = 5.0) -> None:
        """Start the thread and wait (without blocking the loop) until it is warm: connected,
        with extend.lua loaded, before the worker claims anything (see :meth:`_warm_up`)."""
        self._tick()
        self.thread.start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._warm.wait(), timeout)

    def _tick(self) -> None:
        self._last_tick = time.monotonic()
        self._tick_handle = self.loop.call_later(self._tick_every, self._tick)

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop renewing and wait (without blocking the loop) for the thread to end. The thread
        closes its connection itself: if it is stuck in a call to an unreachable Redis past
        ``timeout``, it does so once the call gives up (``socket_timeout``)."""
        self._stopping.set()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        if self.thread.is_alive():
            await asyncio.to_thread(self.thread.join, timeout)
        if self.thread.is_alive():
            log.warning("the heartbeat thread did not stop within %.0f s (a call to Redis hangs)", timeout)

    # ------------------------------------------------------------------ in the thread
    def _run(self) -> None:
        executor = SyncExecutor(self.transport)
        try:
            self._warm_up(executor)
            pause = self.interval
            while not self._stopping.wait(pause):
                started = time.monotonic()
                self.beat(executor)
                # Beats keep their rhythm: a slow round does not push the next one back.
                pause = max(0.0, self.interval - (time.monotonic() - started))
        except BaseException as exc:  # a bug or an error Redis will not get over: stop the worker
            self._post(self.on_failure, exc)
        finally:
            with contextlib.suppress(Exception):
                self.transport.close()

    def _warm_up(self, executor: SyncExecutor) -> None:
        """Connect and load extend.lua while no job runs yet. Otherwise the first renewal --
        just when the first claimed jobs' threads start and contend for the GIL -- also
        connects and meets NOSCRIPT: more round trips, each more waits for the GIL. With ten
        jobs busy in pure Python on a loaded machine that beat took 1.4-1.8 s, and a 2 s lease
        ran out. Renewing nothing is a valid extend; a Redis that is not there yet is retried
        by the beats as usual."""
        try:
            executor.run_together([ops.extend(keys, self.lease_ms, []) for keys in self.keys.values()])
            if self.figures is not None:
                self.figures.attempted_at = self.figures.succeeded_at = time.monotonic()
        except RETRYABLE_REDIS_ERRORS as exc:
            log.warning("heartbeat could not reach Redis at start (%s); will retry", exc)
        finally:
            self._post(self._warm.set)

    def beat(self, executor: SyncExecutor) -> None:
        """One round: renew every held lease, then the worker's registry entry."""
        figures = self.figures
        if figures is not None:
            figures.attempted_at = time.monotonic()
        blocked = time.monotonic() - self._last_tick
        if blocked > self.max_loop_block:
            if self._renewing:
                self._renewing = False
                log.error(
                    "the event loop has not run for %.1f s (max_loop_block %.1f s): it looks hung, so "
                    "its jobs' leases are no longer renewed and they will be re-delivered",
                    blocked,
                    self.max_loop_block,
                )
            return
        if not self._renewing:
            self._renewing = True
            log.warning("the event loop runs again; renewing leases again")
        renewals: list[tuple[str, list[tuple[str, str]]]] = []
        for queue, jobs in self.held.items():
            # dict(): one atomic copy (see the module docstring), then read at leisure.
            pairs = [(entry.job_id, token) for token, entry in dict(jobs).items()]
            # Every queue, even with nothing held: each extend also tells the queue's lease
            # clock that a worker reaches Redis, so that the sweep can tell a Redis outage
            # from lost workers (see lease_contact in scripts/include/common.lua).
            for start in range(0, max(len(pairs), 1), EXTEND_CHUNK):
                renewals.append((queue, pairs[start : start + EXTEND_CHUNK]))
        operations = [ops.extend(self.keys[queue], self.lease_ms, chunk) for queue, chunk in renewals]
        started = time.monotonic()
        try:
            # One round trip for everything: each one costs this thread two waits for the GIL.
            results = executor.run_together([*operations, *self.registration()])
        except RETRYABLE_REDIS_ERRORS as exc:
            log.warning("heartbeat failed (%s); will retry", exc)
            return
        if figures is not None:
            # Each extend answers (lost, aborted): a lost lease was not renewed.
            lost_leases = sum(len(answer[0]) for answer in results[: len(renewals)])
            figures.succeeded(time.monotonic() - started, sum(len(c) for _, c in renewals) - lost_leases)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "heartbeat: renewed %d leases in %.1f ms",
                sum(len(chunk) for _, chunk in renewals),
                (time.monotonic() - started) * 1000,
            )
        for (queue, _), (lost, aborted) in zip(renewals, results, strict=False):
            if lost or aborted:
                self._post(self.on_answers, queue, lost, aborted)

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: the worker is gone anyway
            self.loop.call_soon_threadsafe(callback, *args)

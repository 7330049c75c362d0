"""Refusals: replies meaning Redis certainly did not run the command, and waiting them out.

A Redis Cluster refuses a command it cannot run *yet*, before running any of it:

* ``TRYAGAIN`` -- the keys of one command (a script's KEYS) sit on two nodes while their
  slot migrates; the command waits until the slot is whole on one side;
* ``MOVED`` / ``ASK`` -- the slot lives (or, mid-migration, the key already lives)
  elsewhere; redis-py follows these itself, but only a few times per call (about 0.4 s of
  ``TRYAGAIN`` in all), then gives up with ``ClusterError("TTL exhausted.")``;
* ``CLUSTERDOWN`` (and ``MASTERDOWN``) -- the node does not serve the slot until a failover
  ends; redis-py's ``SlotNotCoveredError`` -- its own map of slots has a hole, nothing was sent.

Since nothing ran, calling again is safe for any command, scripts included, and a busy
queue's slot can migrate without its producers seeing an error. Everything else -- above
all a connection that broke or timed out, after which the command may well have run -- is
*not* a refusal and is never retried here: re-running an enqueue whose reply was lost
would create its jobs twice.

Both transports that talk to a cluster (:class:`~conveyor.redis.redispy.RedisPySyncTransport`
and its asyncio twin) wrap every call in one :class:`Patience`; this module decides what
counts as a refusal, how long to wait between tries and when to give up.
"""

from __future__ import annotations

import time

from redis.exceptions import AskError, ClusterDownError, ClusterError, SlotNotCoveredError, TryAgainError

from ..errors import ClusterUnavailable

DEFAULT_CLUSTER_WAIT = 30.0
"""Seconds a call waits out refusals before :class:`ClusterUnavailable`: long enough for
the live migration of a slot holding tens of thousands of keys."""

_REFUSED = (TryAgainError, AskError, ClusterDownError, SlotNotCoveredError)
"""``AskError`` includes ``MovedError``; ``ClusterDownError`` includes ``MasterDownError``."""

_FIRST_DELAY = 0.01
_MAX_DELAY = 0.25


def refused(exc: BaseException) -> bool:
    """Whether ``exc`` says Redis (or redis-py, before sending) did not run the command."""
    if isinstance(exc, _REFUSED):
        return True
    # Raised by redis-py only when every try of its redirection loop ended in MOVED, ASK or
    # TRYAGAIN; any other error leaves that loop at once. A subclass (ClusterDownError) is
    # matched above; the exact type and message are checked so nothing else slips in.
    return type(exc) is ClusterError and str(exc).startswith("TTL exhausted")


class Patience:
    """The waiting of one call: how long to sleep after each refusal, and when to stop.

    ``next_delay`` returns the seconds to sleep before the next try, doubling from 10 ms to
    250 ms, and raises :class:`ClusterUnavailable` (from the refusal) once ``limit`` seconds
    have passed since the first refusal. The sync and async transports differ only in how
    they sleep.
    """

    __slots__ = ("_deadline", "_delay", "limit", "tries")

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self._deadline: float | None = None
        self._delay = _FIRST_DELAY
        self.tries = 0

    def next_delay(self, exc: BaseException) -> float:
        now = time.monotonic()
        if self._deadline is None:
            self._deadline = now + self.limit
        self.tries += 1
        if now >= self._deadline:
            raise ClusterUnavailable(
                f"Redis Cluster refused the command for {self.limit:g} s ({self.tries} tries; last: "
                f"{type(exc).__name__}: {exc}); it did not run. A slot migrating or a failover "
                "taking longer than cluster_wait_ms? Retry later, or raise CONVEYOR_CLUSTER_WAIT_MS."
            ) from exc
        delay = min(self._delay, self._deadline - now)
        self._delay = min(self._delay * 2, _MAX_DELAY)
        return delay

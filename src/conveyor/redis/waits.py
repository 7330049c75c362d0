"""How long a blocking command may wait in Redis, and waits cut into pieces for clients that
hold a blocking reply to their socket timeout (redis-py).
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from typing import Any

_BLOCKING_LAST = frozenset({"BLPOP", "BRPOP", "BZPOPMIN", "BZPOPMAX", "BLMOVE", "BRPOPLPUSH"})


def _blocks_for(args: Sequence[Any]) -> float | None:
    """How long a blocking command may legitimately wait in Redis (None: forever)."""
    name = str(args[0]).upper()
    try:
        if name in _BLOCKING_LAST:
            seconds = float(args[-1])
        elif name in ("BLMPOP", "BZMPOP"):
            seconds = float(args[1])
        elif name in ("XREAD", "XREADGROUP"):
            upper = [str(a).upper() for a in args]
            seconds = float(args[upper.index("BLOCK") + 1]) / 1000 if "BLOCK" in upper else 0.0
        else:
            return 0.0
    except (ValueError, IndexError):
        return None
    return seconds or None


MAX_WAIT_SLICE = 2.5
"""Seconds one popping command waits in Redis at most on a redis-py client (see below)."""


def sliced_wait(args: Sequence[Any], limit: float | None) -> Generator[Sequence[Any], Any, Any]:
    """The commands that make up one popping wait (``BLPOP ... timeout``) on a client that
    holds a blocking reply to its socket timeout ``limit``, as redis-py does: a longer wait
    is made of waits of half the limit, and of at most ``MAX_WAIT_SLICE``. A wait that
    popped nothing changed nothing, so the next one just goes on. Send each command's reply
    in; the wait's reply is returned.

    The cap: a worker stopping cancels its wait for work, and redis-py's asyncio cluster
    client now and then absorbs that cancellation (about 1 stop in 50, with a 30 s wait):
    the asyncio face re-raises it between pieces, so it costs 2.5 s at most."""
    wait = _blocks_for(args)  # None: forever
    piece = MAX_WAIT_SLICE if limit is None else min(limit / 2, MAX_WAIT_SLICE)
    if str(args[0]).upper() not in _BLOCKING_LAST or (wait and wait <= piece):
        return (yield args)
    deadline = None if wait is None else time.monotonic() + wait
    while True:
        left = piece if deadline is None else min(piece, deadline - time.monotonic())
        reply = yield (*args[:-1], round(max(left, 0.001), 3))
        if reply is not None or (deadline is not None and time.monotonic() >= deadline - 0.001):
            return reply

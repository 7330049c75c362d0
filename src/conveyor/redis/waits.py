"""How long a blocking command may wait in Redis, and waits cut into pieces for clients that
hold a blocking reply to their socket timeout (redis-py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
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
    """The commands that make up one blocking wait (``BLPOP ... timeout``, ``XREAD BLOCK ms``)
    on a client that holds a blocking reply to its socket timeout ``limit``, as redis-py does:
    a longer wait is made of waits of half the limit, and of at most ``MAX_WAIT_SLICE``. A wait
    that popped or read nothing changed nothing, so the next one just goes on. Send each
    command's reply in; the wait's reply is returned.

    The cap: a worker stopping cancels its wait for work, and redis-py's asyncio cluster
    client now and then absorbs that cancellation (about 1 stop in 50, with a 30 s wait):
    the asyncio face re-raises it between pieces, so it costs 2.5 s at most."""
    wait = _blocks_for(args)  # None: forever
    piece = MAX_WAIT_SLICE if limit is None else min(limit / 2, MAX_WAIT_SLICE)
    name = str(args[0]).upper()
    if wait and wait <= piece:
        return (yield args)
    if name in _BLOCKING_LAST:
        return (yield from _pieces(wait, piece, lambda left: (*args[:-1], round(left, 3)), popped=True))
    if name in ("XREAD", "XREADGROUP"):
        return (yield from _sliced_read(args, wait, piece))
    return (yield args)


def _pieces(
    wait: float | None, piece: float, command: Callable[[float], Sequence[Any]], popped: bool
) -> Generator[Sequence[Any], Any, Any]:
    """``command(seconds)`` again and again, until one gets something or ``wait`` is over.
    ``popped``: a pop got something when its reply is not None (``BLMOVE`` may move "");
    a stream read, when its reply is not empty."""
    deadline = None if wait is None else time.monotonic() + wait
    while True:
        left = piece if deadline is None else min(piece, deadline - time.monotonic())
        reply = yield command(max(left, 0.001))
        got = reply is not None if popped else bool(reply)
        if got or (deadline is not None and time.monotonic() >= deadline - 0.001):
            return reply


def _sliced_read(args: Sequence[Any], wait: float | None, piece: float) -> Generator[Sequence[Any], Any, Any]:
    """``XREAD``/``XREADGROUP ... BLOCK ms ... STREAMS keys ids`` in pieces of ``BLOCK``.

    ``XREAD``'s id ``$`` ("only what comes after now") is pinned to each stream's newest
    entry first: a ``$`` of every piece would stand for a later now, and what was appended
    between two pieces would be read by neither. ``XREADGROUP``'s ``>`` needs no pinning: the
    group remembers what it was given."""
    layout = _read_layout(args)
    if layout is None:  # no BLOCK, or options this does not know: as it is
        return (yield args)
    block, first = layout
    streams = list(args[first:])
    count = len(streams) // 2
    ids = streams[count:]
    if str(args[0]).upper() == "XREAD":
        for i, (key, after) in enumerate(zip(streams[:count], ids, strict=True)):
            if after == "$":
                newest = yield ("XREVRANGE", key, "+", "-", "COUNT", 1)
                ids[i] = str(newest[0][0]) if newest else "0-0"  # none yet: the first to come

    def piece_of(seconds: float) -> Sequence[Any]:
        milliseconds = max(1, round(seconds * 1000))  # BLOCK 0 would wait forever
        return (*args[:block], milliseconds, *args[block + 1 : first], *streams[:count], *ids)

    return (yield from _pieces(wait, piece, piece_of, popped=False))


def _read_layout(args: Sequence[Any]) -> tuple[int, int] | None:
    """Where a stream read's ``BLOCK`` value and its first stream key are, read option by
    option (a key or a group may be called "block"); None without ``BLOCK``, or with an
    option it does not know, or an odd number of keys and ids."""
    block = None
    at = 1
    while at < len(args):
        word = str(args[at]).upper()
        if word == "STREAMS":
            streams = len(args) - at - 1
            return (block, at + 1) if block is not None and streams and streams % 2 == 0 else None
        if word == "BLOCK":
            block = at + 1
        width = {"GROUP": 3, "COUNT": 2, "BLOCK": 2, "CLAIM": 2, "NOACK": 1}.get(word)
        if width is None:
            return None
        at += width
    return None

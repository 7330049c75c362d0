"""redis-py's parsed replies put back in the shapes Redis sends them (RESP2, as hiredis reads it).

redis-py turns some replies into dicts, tuples of pairs and floats, and which ones depends
on its version, on the protocol (RESP3 by default since redis-py 8) and on
``legacy_responses``: ``XREAD`` alone comes in four shapes. The operations parse each
reply once, in the shape the lean transports get it (see :mod:`conveyor.redis.base`), so
the redis-py adapters reshape the replies of the commands below, whatever shape they
arrive in. Any other reply is returned as redis-py parsed it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def reshaped(args: Sequence[Any], reply: Any) -> Any:
    """``reply`` to the command ``args`` in the shape the lean transports give it."""
    name = str(args[0]).upper()
    if name in ("CONFIG", "SCRIPT") and len(args) > 1:
        name = f"{name} {str(args[1]).upper()}"
    reshape = _RESHAPE.get(name)
    return reply if reshape is None else reshape(reply)


def _flat_map(reply: Any) -> Any:
    """A map (``HGETALL``, ``CONFIG GET``, a stream entry's fields) as [field, value, ...]."""
    if isinstance(reply, dict):
        return [item for pair in reply.items() for item in pair]
    return reply


def _score(value: Any) -> Any:
    """A score as Redis writes it: ``"2"``, ``"1.5"``, ``"inf"``."""
    if isinstance(value, float):
        return repr(value).removesuffix(".0")
    return value


def _scored(reply: Any) -> Any:
    """``ZRANGE ... WITHSCORES`` as [member, score, ...] (redis-py: pairs, scores as floats);
    ``BZPOPMIN`` as [key, member, score]."""
    if not reply:
        return reply
    if isinstance(reply[0], list | tuple):
        return [item for member, score in reply for item in (member, _score(score))]
    return [_score(item) for item in reply]  # members are text: only scores are floats


def _entries(reply: Any) -> Any:
    """Stream entries (``XRANGE``) as [[id, [field, value, ...]], ...]."""
    if not reply:
        return reply
    return [[entry[0], _flat_map(entry[1])] for entry in reply]


def _streams(reply: Any) -> Any:
    """``XREAD`` as [[stream, entries], ...], and None when nothing was read."""
    if not reply:
        return None
    streams = reply.items() if isinstance(reply, dict) else reply
    return [[name, _entries(_unwrapped(entries))] for name, entries in streams]


def _unwrapped(entries: Any) -> Any:
    # redis-py with protocol=3 and legacy responses wraps each stream's entries in one list
    # more: [[(id, {...}), ...]], where an entry itself is [id, ...] or (id, {...}).
    first = entries[0] if entries else None
    if isinstance(first, list) and (not first or isinstance(first[0], list | tuple)):
        return first
    return entries


def _members(reply: Any) -> Any:
    """``SMEMBERS`` as a list (redis-py: a set)."""
    return list(reply) if isinstance(reply, set | frozenset) else reply


def _exists(reply: Any) -> Any:
    """``SCRIPT EXISTS`` as 1s and 0s (redis-py: booleans)."""
    return [int(flag) for flag in reply] if isinstance(reply, list | tuple) else reply


_RESHAPE: dict[str, Callable[[Any], Any]] = {
    "HGETALL": _flat_map,
    "CONFIG GET": _flat_map,
    "XREAD": _streams,
    "XREADGROUP": _streams,
    "XRANGE": _entries,
    "XREVRANGE": _entries,
    "ZRANGE": _scored,
    "ZREVRANGE": _scored,
    "ZRANGEBYSCORE": _scored,
    "ZREVRANGEBYSCORE": _scored,
    "ZPOPMIN": _scored,
    "ZPOPMAX": _scored,
    "BZPOPMIN": _scored,
    "BZPOPMAX": _scored,
    "SMEMBERS": _members,
    "SCRIPT EXISTS": _exists,
}
"""The commands whose replies redis-py reshapes: the ones the operations, the worker and the
API send, and their siblings."""

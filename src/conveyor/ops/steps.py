"""The vocabulary of an operation: the steps it yields to its executor.

An operation is a generator: it yields commands (:class:`Script`, :class:`Command`,
:class:`Pipeline`) and receives each reply, then returns its parsed result. The sync and
async faces each drive these generators with one small executor
(:mod:`conveyor.redis.executors`), so the keys, the arguments and the parsing of every
reply are written exactly once, with no I/O here.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .scripts import LuaScript


@dataclass(frozen=True, slots=True)
class Script:
    """Run a Lua script by SHA (the executor reloads it on NOSCRIPT)."""

    script: LuaScript
    keys: Sequence[str]
    args: Sequence[Any]


@dataclass(frozen=True, slots=True)
class Command:
    """Run one plain Redis command."""

    args: tuple[Any, ...]
    blocking: bool = False
    """True for commands that may block (BLPOP): the executor gives them their own connection."""


def _as_is(index: int, reply: Any) -> Any:
    return reply


@dataclass(frozen=True, slots=True)
class Pipeline:
    """Run scripts back to back without waiting for each reply; the reply is the list of
    ``each(index, reply)``, one per script.

    ``scripts`` is consumed lazily: the executor sends one script, then builds the next
    while Redis runs the first, so preparing a bulk write overlaps with executing it.
    ``each`` is called as each reply arrives, so reading the first replies overlaps with
    Redis running the last scripts.
    """

    scripts: Iterator[Script]
    each: Callable[[int, Any], Any] = _as_is


Step = Script | Command | Pipeline


Operation = Generator[Step, Any, Any]


@dataclass(frozen=True, slots=True)
class Retention:
    """How many finished jobs to keep and for how long (-1 = no limit, 0 = delete at once)."""

    keep_count: int
    keep_ms: int


def as_dict(reply: Any) -> dict[str, Any]:
    """A map reply (HGETALL, a stream entry's fields), flat on every transport, as a dict."""
    return dict(zip(reply[::2], reply[1::2], strict=True))

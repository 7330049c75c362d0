"""The transport contract: everything the executors, the clients and the worker ask of a
connection to Redis.

Two kinds of transports implement it: the lean RESP transports over hiredis
(:mod:`conveyor.redis.resp_sync`, :mod:`conveyor.redis.resp_async`) for plain servers,
and adapters over redis-py (:mod:`conveyor.redis.redispy`) for Sentinel and Cluster,
which need topology discovery. Code above this boundary never asks which one it has: what
differs between topologies (pipelining, pinning a connection, waits on keys of several
cluster slots, server-wide commands) is a method here, and each transport does it its way.

**Replies** come in the shapes Redis sends them over RESP2, as hiredis reads them, on every
transport: text decoded as UTF-8, nil as ``None``, an array as a list (a tuple where
redis-py makes one), a map (``HGETALL``, ``CONFIG GET``) as a flat ``[field, value, ...]``
list, a stream entry as ``[id, [field, value, ...]]``, a score as a string. The redis-py
adapters put back what redis-py parses differently (:mod:`conveyor.redis.replies`), so no
operation branches on the shape of a reply. Scalars of commands the operations do not read
may differ (redis-py answers ``OK`` as ``True``).

**Errors**: an error reply is raised as redis-py's exception for it (:func:`raise_for_reply`),
except where a method says it returns them: in a pipeline, an error reply is one reply among
the others.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, Protocol

import hiredis
from redis.exceptions import AuthenticationError, BusyLoadingError, NoScriptError, ResponseError


def hiredis_reader() -> hiredis.Reader:
    # surrogateescape: bytes that are not UTF-8 (a job written into Redis by something else)
    # decode to lone surrogates instead of raising inside the parser, which would drop the
    # connection and every reply on it -- a claim that already ran, with all its jobs.
    # The job's decoder then rejects that one payload, and the job is dead-lettered.
    return hiredis.Reader(encoding="utf-8", errors="surrogateescape", replyError=ResponseError)


_TRANSIENT = ("LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN")


def raise_for_reply(reply: Any) -> Any:
    if isinstance(reply, ResponseError):
        message = str(reply)
        if message.startswith("NOSCRIPT"):
            raise NoScriptError(message)
        if message.startswith(_TRANSIENT):
            # The server is there but cannot answer yet (replaying its AOF, running a slow
            # script, failing over): callers treat this like a lost connection and retry.
            raise BusyLoadingError(message)
        if message.startswith(("WRONGPASS", "NOAUTH", "NOPERM")):
            raise AuthenticationError(message)
        raise reply
    return reply


class SyncPipeline(Protocol):
    """Commands sent without waiting for their replies (:meth:`SyncTransport.pipeline`)."""

    def send(self, args: Sequence[Any]) -> None:
        """Send one command; its reply is read by :meth:`replies`."""

    def replies(self) -> Iterator[Any]:
        """The replies of everything sent, in order, each as soon as it has arrived; error
        replies are returned, not raised. Read them all: the connection is reused after."""


class SyncTransport(Protocol):
    """A connection to Redis for synchronous code: the sync client and the worker's heartbeat
    thread. Safe to share between threads."""

    def call(self, *args: Any) -> Any:
        """Run one command; its reply."""

    def call_blocking(self, *args: Any) -> Any:
        """Run a command that may wait in Redis (``BLPOP``) for as long as it says, beyond the
        command timeout. On redis-py a popping wait or a blocking stream read is made of
        shorter ones (:func:`~conveyor.redis.waits.sliced_wait`)."""

    def call_many(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Run several commands in one round trip where the transport can (one after the other
        on redis-py); their replies, error replies returned, not raised."""

    def pipeline(self) -> AbstractContextManager[SyncPipeline]:
        """Send commands one by one as they are made, read their replies at the end. redis-py
        routes each command itself: there, each runs as it is sent, one after the other."""

    def call_on_primaries(self, *args: Any) -> list[Any]:
        """A server-wide command (``CONFIG GET``, ``SCRIPT EXISTS``) on every primary: one
        reply each (one, from a single server)."""

    def pinned(self) -> AbstractContextManager[SyncTransport]:
        """A transport that runs every command on one connection, for commands that must share
        it (``WAIT`` counts the writes of its own connection); it fails rather than move to
        another. Raises :class:`~conveyor.errors.ConfigurationError` on Redis Cluster."""

    def load_script(self, source: str) -> str:
        """``SCRIPT LOAD``; the script's SHA."""

    def close(self) -> None:
        """Close every connection (a pinned transport leaves its connection to its owner)."""


class AsyncTransport(Protocol):
    """A connection to Redis for asyncio code: the async client, the worker, the API."""

    @property
    def command_timeout(self) -> float | None:
        """Seconds Redis has to answer a command before the connection counts as dead (None:
        no limit); the executor waits for pipelined replies that long."""

    async def call(self, *args: Any) -> Any:
        """Run one command; its reply."""

    async def call_blocking(self, *args: Any) -> Any:
        """Run a command that may wait in Redis (``BZPOPMIN``, ``BLPOP``, ``XREAD BLOCK``) for as
        long as it says, on a connection of its own. On redis-py a popping wait or a blocking
        stream read is made of shorter ones (:func:`~conveyor.redis.waits.sliced_wait`)."""

    async def call_many(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Run several commands in one round trip where the transport can (one after the other
        on redis-py); their replies, error replies returned, not raised."""

    async def send_now(self, args: Sequence[Any]) -> Awaitable[Any]:
        """Pipelining: send one command now and return, without its reply, what yields the
        reply (an error reply is returned, not raised). redis-py routes each command itself:
        there, the command has already run when this returns."""

    async def call_blocking_many(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """A blocking command and commands the server runs as soon as it returns, on the
        blocking connection with no round trip in between (on redis-py: one after the other);
        their replies, error replies returned, not raised."""

    async def pop_any(self, command: str, keys: Sequence[str], timeout: float) -> None:
        """Wait until a blocking pop (``BZPOPMIN``) takes a member from one of ``keys``, or
        ``timeout`` seconds pass. Keys in different slots of a cluster cannot share one
        command: there, each key gets a wait of its own, and the first to end ends the others."""

    async def call_on_primaries(self, *args: Any) -> list[Any]:
        """A server-wide command (``CONFIG GET``, ``SCRIPT EXISTS``) on every primary: one
        reply each (one, from a single server)."""

    def pinned(self) -> AbstractAsyncContextManager[AsyncTransport]:
        """As :meth:`SyncTransport.pinned`. Blocking commands still use connections of their
        own: they write nothing ``WAIT`` must count."""

    async def load_script(self, source: str) -> str:
        """``SCRIPT LOAD``; the script's SHA."""

    async def aclose(self) -> None:
        """Close every connection (a pinned transport leaves its connection to its owner)."""

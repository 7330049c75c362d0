"""The transport contract: everything the executors and clients ask of a connection to Redis.

Two kinds of transports implement it: the lean RESP transports over hiredis
(:mod:`conveyor.redis.resp_sync`, :mod:`conveyor.redis.resp_async`) for plain servers,
and adapters over redis-py (:mod:`conveyor.redis.redispy`) for Sentinel and Cluster,
which need topology discovery. Code above this boundary never asks which one it has.
"""

from __future__ import annotations

from collections.abc import Sequence
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


class SyncTransport(Protocol):
    def call(self, *args: Any) -> Any: ...
    def call_blocking(self, *args: Any) -> Any: ...
    def load_script(self, source: str) -> str: ...
    def close(self) -> None: ...


class AsyncTransport(Protocol):
    async def call(self, *args: Any) -> Any: ...
    async def call_blocking(self, *args: Any) -> Any: ...
    async def call_blocking_many(self, commands: Sequence[Sequence[Any]]) -> list[Any]: ...
    async def load_script(self, source: str) -> str: ...
    async def call_on_primaries(self, *args: Any) -> list[Any]: ...
    async def aclose(self) -> None: ...

"""The lean asyncio RESP transport over hiredis.

The asyncio connection multiplexes: any number of coroutines may send commands on one
connection, replies are matched to requests in order. A coroutine cancelled while it
waits only drops its interest in the reply; the reply is still read and discarded, so no
reply ever reaches the wrong request. Blocking commands (BZPOPMIN, BLPOP) use connections
of their own, because they hold the connection until they return.
"""

from __future__ import annotations

import asyncio
import collections
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .base import AsyncTransport, hiredis_reader, raise_for_reply
from .endpoint import Endpoint
from .waits import _blocks_for


class _AsyncConnection(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis_reader()
        self.waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.lost = asyncio.get_running_loop().create_future()
        """Done once the transport has really closed (TLS needs a few loop turns for that)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check here.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiters = self.waiters
        while True:
            reply = self.reader.gets()
            if reply is False:
                return
            waiter = waiters.popleft()
            if not waiter.done():  # a cancelled caller's reply is read and dropped
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.lost.done():
            self.lost.set_result(None)
        error = RedisConnectionError(f"lost the connection to Redis: {exc or 'closed by the server'}")
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    def send(self, args: Sequence[Any]) -> asyncio.Future[Any]:
        if self.closed or self.transport is None:
            raise RedisConnectionError("the connection to Redis is closed")
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        self.transport.write(hiredis.pack_command(tuple(args)))
        return waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


async def _open(endpoint: Endpoint) -> _AsyncConnection:
    loop = asyncio.get_running_loop()
    context = endpoint.ssl_context()
    try:
        async with asyncio.timeout(endpoint.connect_timeout):
            if endpoint.path:
                _, conn = await loop.create_unix_connection(_AsyncConnection, endpoint.path, ssl=context)
            else:
                _, conn = await loop.create_connection(
                    _AsyncConnection,
                    endpoint.host,
                    endpoint.port,
                    ssl=context,
                    server_hostname=endpoint.host if context else None,
                )
    except (OSError, TimeoutError) as exc:
        where = endpoint.path or f"{endpoint.host}:{endpoint.port}"
        raise RedisConnectionError(f"cannot connect to Redis at {where}: {exc or 'timed out'}") from None
    sock = conn.transport.get_extra_info("socket") if conn.transport else None
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for command in endpoint.handshake():
            raise_for_reply(await conn.send(command))
    except BaseException:  # cancelled or refused during AUTH: do not leak the socket
        conn.close()
        raise
    return conn


class FastAsyncTransport:
    """One multiplexed connection for ordinary commands, dedicated ones for blocking commands."""

    def __init__(self, endpoint: Endpoint, command_timeout: float | None = None) -> None:
        """``command_timeout``: default the endpoint's (``?socket_timeout=``, 60 s)."""
        self.endpoint = endpoint
        self.command_timeout = command_timeout if command_timeout is not None else endpoint.command_timeout
        self._shared: _AsyncConnection | None = None
        self._connecting: asyncio.Lock | None = None
        self._idle_blocking: list[_AsyncConnection] = []

    async def _connection(self) -> _AsyncConnection:
        conn = self._shared
        if conn is not None and not conn.closed:
            return conn
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._shared is None or self._shared.closed:
                self._shared = await _open(self.endpoint)
            return self._shared

    async def call(self, *args: Any) -> Any:
        conn = await self._connection()
        waiter = conn.send(args)
        if self.command_timeout is None:
            return raise_for_reply(await waiter)
        try:
            async with asyncio.timeout(self.command_timeout):
                return raise_for_reply(await waiter)
        except TimeoutError:
            # A silent connection (a network blackhole) fails every request on it and is replaced.
            conn.close()
            raise RedisTimeoutError(f"Redis did not answer within {self.command_timeout} s") from None

    async def send_now(self, args: Sequence[Any]) -> asyncio.Future[Any]:
        """Send one command and return the future of its reply (error replies are returned)."""
        conn = await self._connection()
        return conn.send(args)

    async def call_many(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Pipeline: send all, then await all replies. Error replies are returned, not raised."""
        conn = await self._connection()
        waiters = [conn.send(c) for c in commands]
        return list(await asyncio.gather(*waiters))

    def _blocking_limit(self, args: Sequence[Any]) -> float | None:
        """A blocking command's own timeout plus the command timeout; None: no limit. Without
        it, a connection that died silently (half-open) would hold the caller forever."""
        blocks = _blocks_for(args)
        if blocks is None or self.command_timeout is None:
            return None
        return blocks + self.command_timeout

    @asynccontextmanager
    async def pinned(self) -> AsyncIterator[_PinnedAsync]:
        """The shared connection as a transport that fails rather than move to another one:
        WAIT counts the writes of the connection it runs on."""
        yield _PinnedAsync(self, await self._connection())

    async def call_blocking(self, *args: Any) -> Any:
        conn = self._idle_blocking.pop() if self._idle_blocking else await _open(self.endpoint)
        limit = self._blocking_limit(args)
        try:
            async with asyncio.timeout(limit):
                reply = raise_for_reply(await conn.send(args))
        except TimeoutError:
            conn.close()
            raise RedisTimeoutError(f"Redis did not answer {args[0]} within {limit:g} s") from None
        except BaseException:
            conn.close()  # cancelled mid-command: the connection's state is unknown
            raise
        self._idle_blocking.append(conn)
        return reply

    async def pop_any(self, command: str, keys: Sequence[str], timeout: float) -> None:
        await self.call_blocking(command, *keys, timeout)  # one server: one command

    async def call_blocking_many(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Pipeline on a blocking connection: the server runs the commands after the first one
        (a blocking command) returns, with no round trip in between. Error replies are returned."""
        conn = self._idle_blocking.pop() if self._idle_blocking else await _open(self.endpoint)
        waiters: list[asyncio.Future[Any]] = []
        limit = self._blocking_limit(commands[0])
        try:
            async with asyncio.timeout(limit):
                waiters = [conn.send(c) for c in commands]
                replies = [await w for w in waiters]
        except BaseException as exc:
            for waiter in waiters:  # nobody will read the later replies, nor their errors
                waiter.cancel()
            conn.close()
            if isinstance(exc, TimeoutError):
                raise RedisTimeoutError(f"Redis did not answer {commands[0][0]} within {limit:g} s") from None
            raise
        self._idle_blocking.append(conn)
        return replies

    async def load_script(self, source: str) -> str:
        return str(await self.call("SCRIPT", "LOAD", source))

    async def call_on_primaries(self, *args: Any) -> list[Any]:
        """A server-wide command (``CONFIG GET``): one server, one reply."""
        return [await self.call(*args)]

    async def aclose(self) -> None:
        closing = [conn for conn in (self._shared, *self._idle_blocking) if conn is not None]
        self._shared = None
        self._idle_blocking.clear()
        for conn in closing:
            conn.close()
        # Transports finish closing a few loop turns later (TLS sends close_notify first);
        # wait for that, so a loop that ends right after this leaves no socket behind.
        if closing:
            await asyncio.wait([conn.lost for conn in closing], timeout=1.0)


class _PinnedAsync:
    """The shared connection as a transport (see :meth:`FastAsyncTransport.pinned`); blocking
    commands go to the transport's own connections for them."""

    def __init__(self, transport: FastAsyncTransport, conn: _AsyncConnection) -> None:
        self._transport = transport
        self._conn = conn

    @property
    def command_timeout(self) -> float | None:
        return self._transport.command_timeout

    async def call(self, *args: Any) -> Any:
        if self._conn.closed:
            raise RedisConnectionError("the connection to Redis was lost before the write was confirmed")
        async with asyncio.timeout(self._transport.command_timeout):
            return raise_for_reply(await self._conn.send(args))

    async def send_now(self, args: Sequence[Any]) -> asyncio.Future[Any]:
        if self._conn.closed:
            raise RedisConnectionError("the connection to Redis was lost before the write was confirmed")
        return self._conn.send(args)

    async def call_many(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        waiters = [await self.send_now(c) for c in commands]
        async with asyncio.timeout(self._transport.command_timeout):
            return list(await asyncio.gather(*waiters))

    async def call_blocking(self, *args: Any) -> Any:
        return await self._transport.call_blocking(*args)

    async def call_blocking_many(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        return await self._transport.call_blocking_many(commands)

    async def pop_any(self, command: str, keys: Sequence[str], timeout: float) -> None:
        await self._transport.pop_any(command, keys, timeout)

    async def call_on_primaries(self, *args: Any) -> list[Any]:
        return [await self.call(*args)]

    @asynccontextmanager
    async def pinned(self) -> AsyncIterator[_PinnedAsync]:
        yield self  # already on one connection

    async def load_script(self, source: str) -> str:
        return str(await self.call("SCRIPT", "LOAD", source))

    async def aclose(self) -> None:
        pass  # the transport owns the connection


# mypy holds each transport to the contract it stands for.
_ASYNC: type[AsyncTransport] = FastAsyncTransport
_PINNED: type[AsyncTransport] = _PinnedAsync

"""A lean RESP transport over hiredis, for the hot paths (enqueue, claim, acknowledge).

redis-py spends about 100 µs of Python per round trip here; a socket and hiredis's C
parser spend about half that, and that difference is most of a small job's cost. This
module does only what Conveyor needs: commands in, replies out, pipelining, AUTH/SELECT,
TLS and unix sockets. Sentinel and Cluster, which need topology discovery, go through
redis-py instead (:class:`RedisPyTransport`); both kinds offer the same small interface,
so the executors do not care which one they drive.

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
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis
from redis.exceptions import AuthenticationError, BusyLoadingError, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .errors import ConfigurationError
from .refusals import DEFAULT_CLUSTER_WAIT, Patience, refused

DEFAULT_SOCKET_TIMEOUT = 60.0
DEFAULT_CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to connect, parsed from a ``redis://``, ``rediss://`` or ``unix://`` URL."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None
    username: str | None = None
    password: str | None = None
    db: int = 0
    tls: bool = False
    tls_verify: bool = True
    tls_ca_file: str | None = None
    connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT
    command_timeout: float | None = DEFAULT_SOCKET_TIMEOUT
    """Seconds Redis has to answer a command (beyond a blocking command's own timeout) before
    the connection counts as dead and is replaced: what ends a blackhole or a half-open
    socket. ``?socket_timeout=`` in the URL; 0 waits forever."""

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        username = unquote(parts.username) if parts.username else query.get("username")
        password = unquote(parts.password) if parts.password else query.get("password")
        db = int(query.get("db", 0))
        timeout, connect_timeout = url_timeouts(query)
        if parts.scheme == "unix":
            return cls(
                path=parts.path,
                username=username,
                password=password,
                db=db,
                connect_timeout=connect_timeout,
                command_timeout=timeout,
            )
        if parts.scheme not in ("redis", "rediss"):
            raise ConfigurationError(f"the fast transport does not handle {parts.scheme}:// URLs")
        path = parts.path.strip("/")
        if path:
            try:
                db = int(path)
            except ValueError:
                raise ConfigurationError(f"database in {url!r} must be a number, got {path!r}") from None
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            username=username,
            password=password,
            db=db,
            tls=parts.scheme == "rediss",
            tls_verify=query.get("ssl_cert_reqs", "required") != "none",
            tls_ca_file=query.get("ssl_ca_certs"),
            connect_timeout=connect_timeout,
            command_timeout=timeout,
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.tls_ca_file)
        if not self.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def handshake(self) -> list[tuple[Any, ...]]:
        commands: list[tuple[Any, ...]] = []
        if self.password is not None:
            auth = ("AUTH", self.username, self.password) if self.username else ("AUTH", self.password)
            commands.append(auth)
        if self.db:
            commands.append(("SELECT", self.db))
        return commands


def url_timeouts(query: Mapping[str, str]) -> tuple[float | None, float | None]:
    """``socket_timeout`` and ``socket_connect_timeout`` from a URL's query (None: wait
    forever, written 0), with the same defaults on every topology: redis-py's own are to wait
    forever, except its asyncio cluster client's 5 s."""
    return (
        _seconds(query.get("socket_timeout", str(DEFAULT_SOCKET_TIMEOUT)), "socket_timeout"),
        _seconds(query.get("socket_connect_timeout", str(DEFAULT_CONNECT_TIMEOUT)), "socket_connect_timeout"),
    )


def _seconds(value: str, name: str) -> float | None:
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number of seconds, got {value!r}") from None
    if seconds < 0:
        raise ConfigurationError(f"{name} must not be negative, got {value!r}")
    return seconds or None


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


def _socket_timeout(client: Any) -> float | None:
    """A redis-py client's socket timeout (None: none)."""
    return connection_options(client).get("socket_timeout") or None


def connection_options(client: Any) -> dict[str, Any]:
    """The options a redis-py client opens its connections with; each kind keeps them apart."""
    for holder in (client, getattr(client, "nodes_manager", None), getattr(client, "connection_pool", None)):
        kwargs = getattr(holder, "connection_kwargs", None)  # the asyncio cluster; sync; the rest
        if kwargs is not None:
            return kwargs  # type: ignore[no-any-return]
    return {}


def _reader() -> hiredis.Reader:
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


# ------------------------------------------------------------------------------ sync
class _SyncConnection:
    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.reader = _reader()
        self.sock = self._connect()
        try:
            for command in endpoint.handshake():
                raise_for_reply(self.call(command))
        except BaseException:
            self.close()
            raise

    def _connect(self) -> socket.socket:
        e = self.endpoint
        try:
            if e.path:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(e.connect_timeout)
                sock.connect(e.path)
            else:
                sock = socket.create_connection((e.host, e.port), timeout=e.connect_timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            context = e.ssl_context()
            if context is not None:
                try:
                    sock = context.wrap_socket(sock, server_hostname=e.host)
                except BaseException:
                    sock.close()  # a refused handshake must not leave the TCP socket open
                    raise
            sock.settimeout(e.command_timeout)
            return sock
        except OSError as exc:
            where = e.path or f"{e.host}:{e.port}"
            raise RedisConnectionError(f"cannot connect to Redis at {where}: {exc}") from None

    def call(self, args: Sequence[Any]) -> Any:
        if args[0] == "EVALSHA":  # the hot path (every job operation): never blocks
            self.send(hiredis.pack_command(tuple(args)))
            return self.receive(1)[0]
        return self.call_many([args])[0]

    def call_many(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        blocks = _blocks_for(commands[0])
        if blocks == 0.0:  # not a blocking command: the socket's own timeout holds
            self.send(b"".join(hiredis.pack_command(tuple(c)) for c in commands))
            return self.receive(len(commands))
        timeout = self.endpoint.command_timeout
        self.sock.settimeout(None if blocks is None or timeout is None else blocks + timeout)
        try:
            self.send(b"".join(hiredis.pack_command(tuple(c)) for c in commands))
            return self.receive(len(commands))
        finally:
            with suppress(OSError):
                self.sock.settimeout(timeout)

    def send(self, packed: bytes) -> None:
        try:
            self.sock.sendall(packed)
        except OSError as exc:
            self.close()
            raise RedisConnectionError(f"lost the connection to Redis: {exc}") from None

    def receive(self, count: int) -> list[Any]:
        """Read ``count`` replies; error replies are returned, not raised."""
        try:
            replies: list[Any] = []
            while len(replies) < count:
                reply = self.reader.gets()
                if reply is False:
                    data = self.sock.recv(262144)
                    if not data:
                        raise RedisConnectionError("Redis closed the connection")
                    self.reader.feed(data)
                    continue
                replies.append(reply)
            return replies
        except TimeoutError:
            self.close()
            raise RedisTimeoutError(
                f"Redis did not answer within {self.endpoint.command_timeout} s (socket_timeout); "
                "the connection was dropped"
            ) from None
        except OSError as exc:
            self.close()
            raise RedisConnectionError(f"lost the connection to Redis: {exc}") from None

    def close(self) -> None:
        with suppress(OSError):
            self.sock.close()


class SyncPipe:
    """Commands sent without waiting for their replies (see :meth:`FastSyncTransport.pipeline`)."""

    def __init__(self, conn: _SyncConnection) -> None:
        self._conn = conn
        self._sent = 0

    def send(self, args: Sequence[Any]) -> None:
        self._conn.send(hiredis.pack_command(tuple(args)))
        self._sent += 1

    def replies(self) -> Iterator[Any]:
        """The replies of everything sent, in order, each as soon as it has arrived; error
        replies are returned, not raised. Read them all: the connection is reused after."""
        count, self._sent = self._sent, 0
        for _ in range(count):
            yield self._conn.receive(1)[0]


class _PinnedSync:
    """One connection as a transport (see :meth:`FastSyncTransport.pinned`)."""

    def __init__(self, conn: _SyncConnection) -> None:
        self._conn = conn

    def call(self, *args: Any) -> Any:
        return raise_for_reply(self._conn.call(args))

    call_blocking = call  # a connection allows a blocking command its own timeout

    @contextmanager
    def pipeline(self) -> Iterator[SyncPipe]:
        yield SyncPipe(self._conn)

    def load_script(self, source: str) -> str:
        return str(self.call("SCRIPT", "LOAD", source))

    def close(self) -> None:
        pass  # the pool owns the connection


class FastSyncTransport:
    """A thread-safe pool of plain RESP connections (one per concurrent caller)."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._idle: list[_SyncConnection] = []
        self._lock = threading.Lock()

    @contextmanager
    def _connection(self) -> Iterator[_SyncConnection]:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = _SyncConnection(self.endpoint)
        broken = True
        try:
            yield conn
            broken = False
        except ResponseError:
            broken = False  # an error reply leaves the connection in a good state
            raise
        finally:
            if broken:
                conn.close()
            else:
                with self._lock:
                    self._idle.append(conn)

    def call(self, *args: Any) -> Any:
        # _connection() inlined: this is every single enqueue, and the context manager
        # cost as much as the rest of the call's bookkeeping.
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = _SyncConnection(self.endpoint)
        try:
            reply = conn.call(args)
        except BaseException:
            conn.close()
            raise
        with self._lock:
            self._idle.append(conn)
        return raise_for_reply(reply)

    call_blocking = call  # a connection allows a blocking command its own timeout

    @contextmanager
    def pinned(self) -> Iterator[_PinnedSync]:
        """A transport over one connection of the pool, for commands that must share it (WAIT)."""
        with self._connection() as conn:
            yield _PinnedSync(conn)

    def call_many(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send all commands, then read all replies: one round trip. Error replies are returned."""
        with self._connection() as conn:
            return conn.call_many(commands)

    @contextmanager
    def pipeline(self) -> Iterator[SyncPipe]:
        """Send commands one by one as they are made, read all replies at the end."""
        with self._connection() as conn:
            yield SyncPipe(conn)

    def load_script(self, source: str) -> str:
        return str(self.call("SCRIPT", "LOAD", source))

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


# ------------------------------------------------------------------------------ async
class _AsyncConnection(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = _reader()
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
    def __init__(self, transport: FastAsyncTransport, conn: _AsyncConnection) -> None:
        self._transport = transport
        self._conn = conn

    async def call(self, *args: Any) -> Any:
        if self._conn.closed:
            raise RedisConnectionError("the connection to Redis was lost before the write was confirmed")
        async with asyncio.timeout(self._transport.command_timeout):
            return raise_for_reply(await self._conn.send(args))

    async def load_script(self, source: str) -> str:
        return str(await self.call("SCRIPT", "LOAD", source))


# ------------------------------------------------------------------------------ redis-py
class RedisPySyncTransport:
    """Adapter for a redis-py client: Sentinel, Cluster, or a client the user already has.

    Every call waits out cluster refusals (a slot mid-migration, a failover) for up to
    ``cluster_wait`` seconds: see :mod:`conveyor.refusals`.
    """

    def __init__(
        self, client: Any, also_close: Sequence[Any] = (), cluster_wait: float = DEFAULT_CLUSTER_WAIT
    ) -> None:
        self.client = client
        self.also_close = list(also_close)
        self.cluster_wait = cluster_wait

    def _patiently(self, run: Callable[[], Any]) -> Any:
        patience: Patience | None = None
        while True:
            try:
                return run()
            except Exception as exc:
                if not refused(exc):
                    raise
                patience = patience or Patience(self.cluster_wait)
                time.sleep(patience.next_delay(exc))

    def call(self, *args: Any) -> Any:
        return self._patiently(lambda: self.client.execute_command(*args))

    def call_blocking(self, *args: Any) -> Any:
        """A popping command that may wait in Redis longer than the socket timeout allows a
        reply: see :func:`sliced_wait`."""
        waits = sliced_wait(args, _socket_timeout(self.client))
        try:
            command = next(waits)
            while True:
                command = waits.send(self.call(*command))
        except StopIteration as stop:
            return stop.value

    def call_many(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        return [self._try(c) for c in commands]

    def _try(self, command: Sequence[Any]) -> Any:
        try:
            return self.call(*command)
        except ResponseError as exc:
            return exc

    def load_script(self, source: str) -> str:
        return str(self._patiently(lambda: self.client.script_load(source)))

    @contextmanager
    def pinned(self) -> Iterator[RedisPySyncTransport]:
        pool = getattr(self.client, "connection_pool", None)
        if pool is None:
            raise ConfigurationError("durable enqueue (WAIT) is not available on Redis Cluster")
        single = type(self.client)(connection_pool=pool, single_connection_client=True)
        # A Sentinel connection that follows the primary must not follow it between the
        # writes and their WAIT (conveyor.sentinel.FollowingConnection.pin).
        pin = getattr(single.connection, "pin", None)
        if pin is not None:
            pin(True)
        try:
            yield RedisPySyncTransport(single, cluster_wait=self.cluster_wait)
        finally:
            if pin is not None:
                pin(False)
            single.close()

    def close(self) -> None:
        self.client.close()
        for other in self.also_close:
            other.close()


class RedisPyAsyncTransport:
    """The asyncio twin of :class:`RedisPySyncTransport`."""

    def __init__(
        self, client: Any, also_close: Sequence[Any] = (), cluster_wait: float = DEFAULT_CLUSTER_WAIT
    ) -> None:
        self.client = client
        self.also_close = list(also_close)
        self.cluster_wait = cluster_wait

    async def _patiently(self, run: Callable[[], Awaitable[Any]]) -> Any:
        patience: Patience | None = None
        while True:
            try:
                return await run()
            except Exception as exc:
                if not refused(exc):
                    raise
                patience = patience or Patience(self.cluster_wait)
                await asyncio.sleep(patience.next_delay(exc))

    async def call(self, *args: Any) -> Any:
        return await self._patiently(lambda: self.client.execute_command(*args))

    async def call_many(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        out = []
        for command in commands:
            try:
                out.append(await self.call(*command))
            except ResponseError as exc:
                out.append(exc)
        return out

    async def call_blocking(self, *args: Any) -> Any:
        """A popping command that may wait in Redis longer than the socket timeout allows a
        reply: see :func:`sliced_wait`. Without it, a cluster with a 5 s socket timeout failed
        every idle worker's 5 s wait for work ("Timeout reading from ..."), and an API long
        poll beyond 5 s answered 503."""
        waits = sliced_wait(args, _socket_timeout(self.client))
        task = asyncio.current_task()
        try:
            command = next(waits)
            while True:
                reply = await self.call(*command)
                if task is not None and task.cancelling():
                    # redis-py's asyncio cluster client now and then absorbs a cancellation
                    # that reaches it mid-read (the task stays "cancelling" and goes on):
                    # a stopping worker then waited out the whole wait for work.
                    raise asyncio.CancelledError
                command = waits.send(reply)
        except StopIteration as stop:
            return stop.value

    async def call_blocking_many(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        # redis-py routes each command itself (possibly to different nodes): one after another.
        try:
            first = await self.call_blocking(*commands[0])
        except ResponseError as exc:
            first = exc
        return [first, *await self.call_many(commands[1:])]

    async def load_script(self, source: str) -> str:
        return str(await self._patiently(lambda: self.client.script_load(source)))

    async def call_on_primaries(self, *args: Any) -> list[Any]:
        """A server-wide command (``CONFIG GET``) on every primary of a cluster, one reply each.

        redis-py's asyncio cluster client routes such commands to one node only at the first
        call, and refuses them after ("Missing key"): the nodes must be named.
        """
        primaries = getattr(self.client, "get_primaries", None)
        if primaries is None:
            return [await self.call(*args)]
        await self.client.initialize()  # a no-op once the map of nodes is known
        replies = await self._patiently(lambda: self.client.execute_command(*args, target_nodes=primaries()))
        return list(replies.values()) if isinstance(replies, dict) and len(primaries()) > 1 else [replies]

    @asynccontextmanager
    async def pinned(self) -> AsyncIterator[RedisPyAsyncTransport]:
        pool = getattr(self.client, "connection_pool", None)
        if pool is None:
            raise ConfigurationError("durable enqueue (WAIT) is not available on Redis Cluster")
        single = type(self.client)(connection_pool=pool, single_connection_client=True)
        pin = None
        try:
            await single.initialize()
            pin = getattr(single.connection, "pin", None)
            if pin is not None:
                pin(True)
            yield RedisPyAsyncTransport(single, cluster_wait=self.cluster_wait)
        finally:
            if pin is not None:
                pin(False)
            await single.aclose()

    async def aclose(self) -> None:
        await self.client.aclose()
        for other in self.also_close:
            await other.aclose()

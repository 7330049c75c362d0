"""The lean sync RESP transport over hiredis: a thread-safe pool of plain connections.

redis-py spends about 100 µs of Python per round trip here; a socket and hiredis's C
parser spend about half that, and that difference is most of a small job's cost. This
does only what Conveyor needs: commands in, replies out, pipelining, AUTH/SELECT, TLS
and unix sockets.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .base import SyncPipeline, SyncTransport, hiredis_reader, raise_for_reply
from .endpoint import Endpoint
from .waits import _blocks_for


class _SyncConnection:
    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.reader = hiredis_reader()
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

    def call_many(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        return self._conn.call_many(commands)

    @contextmanager
    def pipeline(self) -> Iterator[SyncPipe]:
        yield SyncPipe(self._conn)

    def call_on_primaries(self, *args: Any) -> list[Any]:
        return [self.call(*args)]

    @contextmanager
    def pinned(self) -> Iterator[_PinnedSync]:
        yield self  # already on one connection

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

    def call_on_primaries(self, *args: Any) -> list[Any]:
        """A server-wide command (``CONFIG GET``): one server, one reply."""
        return [self.call(*args)]

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


# mypy holds each transport to the contract it stands for.
_SYNC: type[SyncTransport] = FastSyncTransport
_PINNED: type[SyncTransport] = _PinnedSync
_PIPE: type[SyncPipeline] = SyncPipe

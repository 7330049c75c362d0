"""Adapters that make a redis-py client a transport: Sentinel, Cluster, or a client the user
already has.

Every call waits out cluster refusals (a slot mid-migration, a failover) for up to
``cluster_wait`` seconds: see :mod:`conveyor.redis.refusals`. Every reply comes in the shape
the lean transports give it (:mod:`conveyor.redis.replies`). redis-py routes each command
itself, so what the contract pipelines runs here one command after the other.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import redis.asyncio.cluster
import redis.cluster
from redis.exceptions import ResponseError

from ..errors import ConfigurationError
from .base import AsyncTransport, SyncTransport
from .refusals import DEFAULT_CLUSTER_WAIT, Patience, refused
from .replies import reshaped
from .waits import sliced_wait


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


class RedisPySyncTransport:
    """Adapter for a redis-py client: Sentinel, Cluster, or a client the user already has.

    Every call waits out cluster refusals (a slot mid-migration, a failover) for up to
    ``cluster_wait`` seconds: see :mod:`conveyor.redis.refusals`.
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
        return reshaped(args, self._patiently(lambda: self.client.execute_command(*args)))

    def call_blocking(self, *args: Any) -> Any:
        """A popping command or an ``XREAD BLOCK`` that may wait in Redis longer than the socket
        timeout allows a reply: see :func:`sliced_wait`."""
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

    @contextmanager
    def pipeline(self) -> Iterator[_InTurn]:
        yield _InTurn(self)

    def call_on_primaries(self, *args: Any) -> list[Any]:
        """A server-wide command (``SCRIPT EXISTS``) on every primary of a cluster, one reply
        each: each is asked on its own, so its reply is its own (redis-py merges or keys the
        replies of several)."""
        if not isinstance(self.client, redis.cluster.RedisCluster):
            return [self.call(*args)]
        primaries: list[Any] = self.client.get_primaries()  # type: ignore[no-untyped-call]
        return [self._on(node, args) for node in primaries]

    def _on(self, node: Any, args: Sequence[Any]) -> Any:
        return reshaped(args, self._patiently(lambda: self.client.execute_command(*args, target_nodes=node)))

    def load_script(self, source: str) -> str:
        return str(self._patiently(lambda: self.client.script_load(source)))

    @contextmanager
    def pinned(self) -> Iterator[RedisPySyncTransport]:
        pool = getattr(self.client, "connection_pool", None)
        if pool is None:
            raise ConfigurationError("durable enqueue (WAIT) is not available on Redis Cluster")
        single = type(self.client)(connection_pool=pool, single_connection_client=True)
        # A Sentinel connection that follows the primary must not follow it between the
        # writes and their WAIT (conveyor.redis.sentinel.FollowingConnection.pin).
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


class _InTurn:
    """A pipeline over a client that routes each command itself: each command runs as it is
    sent, and its reply (an error reply too) waits for :meth:`replies`."""

    def __init__(self, transport: RedisPySyncTransport) -> None:
        self._transport = transport
        self._replies: list[Any] = []

    def send(self, args: Sequence[Any]) -> None:
        self._replies.append(self._transport._try(args))

    def replies(self) -> Iterator[Any]:
        replies, self._replies = self._replies, []
        yield from replies


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

    @property
    def command_timeout(self) -> float | None:
        return _socket_timeout(self.client)

    async def call(self, *args: Any) -> Any:
        return reshaped(args, await self._patiently(lambda: self.client.execute_command(*args)))

    async def call_many(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        return [await self._try(command) for command in commands]

    async def _try(self, command: Sequence[Any]) -> Any:
        try:
            return await self.call(*command)
        except ResponseError as exc:
            return exc

    async def send_now(self, args: Sequence[Any]) -> Awaitable[Any]:
        """Runs the command, and returns its reply as a future that is already done."""
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        reply.set_result(await self._try(args))
        return reply

    async def call_blocking(self, *args: Any) -> Any:
        """A popping command or an ``XREAD BLOCK`` that may wait in Redis longer than the socket
        timeout allows a reply: see :func:`sliced_wait`. Without it, a cluster with a 5 s socket
        timeout failed every idle worker's 5 s wait for work ("Timeout reading from ..."), and
        an API long poll beyond 5 s answered 503."""
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

    async def pop_any(self, command: str, keys: Sequence[str], timeout: float) -> None:
        if len(keys) == 1 or not self._clustered:
            await self.call_blocking(command, *keys, timeout)
            return
        # In a cluster the keys live in different slots: wait on each, first one wins.
        waits = [asyncio.ensure_future(self.call_blocking(command, key, timeout)) for key in keys]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
            # Let the cancelled commands drop their connections before we go on.
            await asyncio.gather(*waits, return_exceptions=True)

    @property
    def _clustered(self) -> bool:
        return isinstance(self.client, redis.asyncio.cluster.RedisCluster)

    async def load_script(self, source: str) -> str:
        return str(await self._patiently(lambda: self.client.script_load(source)))

    async def call_on_primaries(self, *args: Any) -> list[Any]:
        """A server-wide command (``CONFIG GET``) on every primary of a cluster, one reply each.

        redis-py's asyncio cluster client routes such commands to one node only at the first
        call, and refuses them after ("Missing key"): the nodes must be named. Each is asked
        on its own, so its reply is its own (redis-py merges or keys the replies of several).
        """
        if not self._clustered:
            return [await self.call(*args)]
        await self.client.initialize()  # a no-op once the map of nodes is known

        async def on(node: Any) -> Any:
            return await self._patiently(lambda: self.client.execute_command(*args, target_nodes=node))

        replies = await asyncio.gather(*(on(node) for node in self.client.get_primaries()))
        return [reshaped(args, reply) for reply in replies]

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


# mypy holds each transport to the contract it stands for.
_SYNC: type[SyncTransport] = RedisPySyncTransport
_ASYNC: type[AsyncTransport] = RedisPyAsyncTransport

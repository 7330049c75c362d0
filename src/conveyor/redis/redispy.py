"""Adapters that make a redis-py client a transport: Sentinel, Cluster, or a client the user
already has.

Every call waits out cluster refusals (a slot mid-migration, a failover) for up to
``cluster_wait`` seconds: see :mod:`conveyor.redis.refusals`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from redis.exceptions import ResponseError

from ..errors import ConfigurationError
from .refusals import DEFAULT_CLUSTER_WAIT, Patience, refused
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

"""The two small executors that drive operations (see :mod:`conveyor.operations`).

Each runs a script by SHA and loads it once when Redis answers NOSCRIPT (after a restart,
a failover or SCRIPT FLUSH), and turns ``CONVEYOR:<CODE>`` script errors into typed
exceptions. Everything else about an operation lives in the operation itself.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, TypeVar

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis.exceptions import NoScriptError, ResponseError

from .errors import from_script_error
from .operations import Script, Step

T = TypeVar("T")

SyncRedis = redis.Redis | redis.cluster.RedisCluster
AsyncRedis = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster


def _typed(exc: ResponseError) -> Exception:
    return from_script_error(str(exc)) or exc


class SyncExecutor:
    def __init__(self, client: SyncRedis) -> None:
        self.redis = client

    def run(self, operation: Generator[Step, Any, T]) -> T:
        try:
            step = next(operation)
            while True:
                step = operation.send(self.execute(step))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def execute(self, step: Step) -> Any:
        try:
            if isinstance(step, Script):
                return self._script(step)
            return self.redis.execute_command(*step.args)  # type: ignore[no-untyped-call]
        except NoScriptError:
            raise
        except ResponseError as exc:
            raise _typed(exc) from None

    def _script(self, step: Script) -> Any:
        keys, args = step.keys, step.args
        try:
            return self.redis.evalsha(step.script.sha, len(keys), *keys, *args)
        except NoScriptError:
            self.redis.script_load(step.script.source)
            return self.redis.evalsha(step.script.sha, len(keys), *keys, *args)


class AsyncExecutor:
    def __init__(self, client: AsyncRedis) -> None:
        self.redis = client

    async def run(self, operation: Generator[Step, Any, T]) -> T:
        try:
            step = next(operation)
            while True:
                step = operation.send(await self.execute(step))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    async def execute(self, step: Step) -> Any:
        try:
            if isinstance(step, Script):
                return await self._script(step)
            return await self.redis.execute_command(*step.args)
        except NoScriptError:
            raise
        except ResponseError as exc:
            raise _typed(exc) from None

    async def _script(self, step: Script) -> Any:
        keys, args = step.keys, step.args
        try:
            return await self.redis.evalsha(step.script.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.redis.script_load(step.script.source)
            return await self.redis.evalsha(step.script.sha, len(keys), *keys, *args)

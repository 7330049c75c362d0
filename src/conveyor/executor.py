"""The two small executors that drive operations (see :mod:`conveyor.operations`).

Each runs a script by SHA and loads it once when Redis answers NOSCRIPT (after a restart,
a failover or SCRIPT FLUSH), and turns ``CONVEYOR:<CODE>`` script errors into typed
exceptions. Everything else about an operation lives in the operation itself.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, TypeVar

from redis.exceptions import NoScriptError, ResponseError

from .errors import from_script_error
from .operations import Script, Step
from .transport import AsyncTransport, SyncTransport

T = TypeVar("T")


def _typed(exc: ResponseError) -> Exception:
    return from_script_error(str(exc)) or exc


class SyncExecutor:
    def __init__(self, transport: SyncTransport) -> None:
        self.transport = transport

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
            return self.transport.call(*step.args)
        except NoScriptError:
            raise
        except ResponseError as exc:
            raise _typed(exc) from None

    def _script(self, step: Script) -> Any:
        command = ("EVALSHA", step.script.sha, len(step.keys), *step.keys, *step.args)
        try:
            return self.transport.call(*command)
        except NoScriptError:
            self.transport.load_script(step.script.source)
            return self.transport.call(*command)


class AsyncExecutor:
    def __init__(self, transport: AsyncTransport) -> None:
        self.transport = transport

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
            if step.blocking:
                return await self.transport.call_blocking(*step.args)
            return await self.transport.call(*step.args)
        except NoScriptError:
            raise
        except ResponseError as exc:
            raise _typed(exc) from None

    async def _script(self, step: Script) -> Any:
        command = ("EVALSHA", step.script.sha, len(step.keys), *step.keys, *step.args)
        try:
            return await self.transport.call(*command)
        except NoScriptError:
            await self.transport.load_script(step.script.source)
            return await self.transport.call(*command)

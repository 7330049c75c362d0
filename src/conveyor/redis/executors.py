"""The two small executors that drive operations (see :mod:`conveyor.ops`).

Each runs a script by SHA and loads it once when Redis answers NOSCRIPT (after a restart,
a failover or SCRIPT FLUSH), and turns ``CONVEYOR:<CODE>`` script errors into typed
exceptions. Everything else about an operation lives in the operation itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator, Sequence
from typing import Any, TypeVar

from redis.exceptions import NoScriptError, ResponseError

from ..errors import OutOfMemory, from_script_error
from ..ops.steps import Command, Pipeline, Script, Step
from .base import AsyncTransport, SyncTransport, raise_for_reply

T = TypeVar("T")


def _evalsha(step: Script) -> tuple[Any, ...]:
    return ("EVALSHA", step.script.sha, len(step.keys), *step.keys, *step.args)


def _settle(reply: Any, script: Script, rerun: Any) -> Any:
    """A pipelined reply: the value, or the script run again after NOSCRIPT (SCRIPT FLUSH,
    a restart), or the error raised."""
    try:
        return raise_for_reply(reply)
    except NoScriptError:
        return rerun(script)


class _Results:
    """The results of a :class:`Pipeline`, each made as its reply arrives.

    A script that met NOSCRIPT is noted to be run again once every reply has been read (the
    connection may be the one the next command needs); the first error is kept and raised
    then too, after the remaining replies were read off the connection.
    """

    def __init__(self, step: Pipeline) -> None:
        self.each = step.each
        self.values: list[Any] = []
        self.again: list[int] = []
        self.error: Exception | None = None

    def add(self, reply: Any) -> None:
        index = len(self.values)
        self.values.append(None)
        if self.error is not None:
            return
        try:
            self.values[index] = self.each(index, raise_for_reply(reply))
        except NoScriptError:
            self.again.append(index)
        except Exception as exc:
            self.error = exc


def _typed(exc: ResponseError) -> Exception:
    message = str(exc)
    if message.startswith("OOM"):
        return OutOfMemory(f"Redis is out of memory and refused the write; nothing was written ({message})")
    return from_script_error(message) or exc


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
            if isinstance(step, Pipeline):
                return self._pipeline(step)
            if step.blocking:
                return self.transport.call_blocking(*step.args)
            return self.transport.call(*step.args)
        except NoScriptError:
            raise
        except ResponseError as exc:
            raise _typed(exc) from None

    def _script(self, step: Script) -> Any:
        command = _evalsha(step)
        try:
            return self.transport.call(*command)
        except NoScriptError:
            self.transport.load_script(step.script.source)
            return self.transport.call(*command)

    def _pipeline(self, step: Pipeline) -> list[Any]:
        pipeline = getattr(self.transport, "pipeline", None)
        if pipeline is None:  # redis-py (Sentinel, Cluster): one after the other
            return [step.each(index, self._script(script)) for index, script in enumerate(step.scripts)]
        sent: list[Script] = []
        results = _Results(step)
        with pipeline() as pipe:
            for script in step.scripts:  # the next script is built while Redis runs this one
                pipe.send(_evalsha(script))
                sent.append(script)
            for reply in pipe.replies():
                results.add(reply)
        if results.error is not None:
            raise results.error
        for index in results.again:
            results.values[index] = step.each(index, self._script(sent[index]))
        return results.values

    def run_together(self, operations: Sequence[Generator[Step, Any, Any]]) -> list[Any]:
        """Run operations whose first steps (scripts or commands) go out together, in one round
        trip; their results, in order. Later steps, if any, run one by one.

        For the heartbeat thread: each round trip costs it two waits for the GIL (after the
        send and after the receive), which threads busy in pure Python make long.
        """
        firsts = [next(operation) for operation in operations]
        call_many = getattr(self.transport, "call_many", None)
        commands: list[tuple[Any, ...]] = []
        for step in firsts:
            if isinstance(step, Script):
                commands.append(_evalsha(step))
            elif isinstance(step, Command) and not step.blocking:
                commands.append(step.args)
        if call_many is None or len(commands) < len(firsts):
            replies = [self.execute(step) for step in firsts]
        else:
            raw = call_many(commands)
            replies = [self._settled(step, reply) for step, reply in zip(firsts, raw, strict=True)]
        results = []
        for operation, reply in zip(operations, replies, strict=True):
            try:
                step = operation.send(reply)
                while True:
                    step = operation.send(self.execute(step))
            except StopIteration as stop:
                results.append(stop.value)
        return results

    def _settled(self, step: Step, reply: Any) -> Any:
        try:
            if isinstance(step, Script):
                return _settle(reply, step, self._script)
            return raise_for_reply(reply)
        except NoScriptError:
            raise
        except ResponseError as exc:
            raise _typed(exc) from None


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
            if isinstance(step, Pipeline):
                return await self._pipeline(step)
            if step.blocking:
                return await self.transport.call_blocking(*step.args)
            return await self.transport.call(*step.args)
        except NoScriptError:
            raise
        except ResponseError as exc:
            raise _typed(exc) from None

    async def run_after_block(self, blocking: tuple[Any, ...], operation: Generator[Step, Any, T]) -> T:
        """Send ``blocking`` and the operation's first step together on a blocking connection.

        The server runs the step as soon as the blocking command returns, so a worker that
        wakes up for new work has claimed it without another round trip.
        """
        step = next(operation)
        if not isinstance(step, Script):
            raise TypeError("run_after_block needs an operation that starts with a script")
        _, reply = await self.transport.call_blocking_many([blocking, self._evalsha(step)])
        try:
            reply = raise_for_reply(reply)
        except NoScriptError:
            reply = await self.execute(step)
        except ResponseError as exc:
            raise _typed(exc) from None
        try:
            step = operation.send(reply)
            while True:
                step = operation.send(await self.execute(step))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    @staticmethod
    def _evalsha(step: Script) -> tuple[Any, ...]:
        return _evalsha(step)

    async def _pipeline(self, step: Pipeline) -> list[Any]:
        send_now = getattr(self.transport, "send_now", None)
        if send_now is None:  # redis-py (Sentinel, Cluster): one after the other
            return [step.each(index, await self._script(script)) for index, script in enumerate(step.scripts)]
        sent: list[Script] = []
        waiters = []
        for script in step.scripts:  # written out at once; the next is built meanwhile
            waiters.append(await send_now(_evalsha(script)))
            sent.append(script)
        results = _Results(step)
        async with asyncio.timeout(getattr(self.transport, "command_timeout", None)):
            for waiter in waiters:
                results.add(await waiter)
        if results.error is not None:
            raise results.error
        for index in results.again:
            results.values[index] = step.each(index, await self._script(sent[index]))
        return results.values

    async def _script(self, step: Script) -> Any:
        command = _evalsha(step)
        try:
            return await self.transport.call(*command)
        except NoScriptError:
            await self.transport.load_script(step.script.source)
            return await self.transport.call(*command)

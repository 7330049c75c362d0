"""The two small executors that drive operations (see :mod:`conveyor.ops`).

Each runs a script by SHA and loads it once when Redis answers NOSCRIPT (after a restart,
a failover or SCRIPT FLUSH), and turns ``CONVEYOR:<CODE>`` script errors into typed
exceptions. Everything else about an operation lives in the operation itself, and
everything about the connection in the transport (:mod:`conveyor.redis.base`): the
executors never ask which transport they drive.

Each face has one drive loop, :meth:`SyncExecutor.run` and :meth:`AsyncExecutor.run`; the
ways of sending an operation's first step together with other commands
(:meth:`SyncExecutor.run_together`, :meth:`AsyncExecutor.run_after_block`) hand the rest
of the operation to it. The loop is written out in each face rather than shared through a
helper that steps the generator: such a helper (a call per step, a result object per
operation) cost about 0.2 µs per operation, on the path of every enqueue, claim and
acknowledgement.
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


def _settled(reply: Any) -> Any:
    """A reply that came back with others (error replies are returned there): the value, or
    the error raised, typed. NOSCRIPT is raised as it is: the caller runs the script again."""
    try:
        return raise_for_reply(reply)
    except NoScriptError:
        raise
    except ResponseError as exc:
        raise _typed(exc) from None


class SyncExecutor:
    def __init__(self, transport: SyncTransport) -> None:
        self.transport = transport

    def run(self, operation: Generator[Step, Any, T], reply: Any = None) -> T:
        """Run ``operation`` to its end; its result.

        ``reply``: the reply to its first step, when that step was sent already, together
        with others (the operation is then past its first ``yield``); else it starts here.
        """
        try:
            step = operation.send(reply)
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
        sent: list[Script] = []
        results = _Results(step)
        with self.transport.pipeline() as pipe:
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
        commands: list[tuple[Any, ...]] = []
        for step in firsts:
            if isinstance(step, Script):
                commands.append(_evalsha(step))
            elif isinstance(step, Command) and not step.blocking:
                commands.append(step.args)
        if len(commands) < len(firsts):  # a blocking command or a pipeline among them
            replies = [self.execute(step) for step in firsts]
        else:
            raw = self.transport.call_many(commands)
            replies = [self._first(step, reply) for step, reply in zip(firsts, raw, strict=True)]
        return [self.run(operation, reply) for operation, reply in zip(operations, replies, strict=True)]

    def _first(self, step: Step, reply: Any) -> Any:
        try:
            return _settled(reply)
        except NoScriptError:
            if isinstance(step, Script):  # SCRIPT FLUSH, a restart: load it, run it again
                return self.execute(step)
            raise


class AsyncExecutor:
    def __init__(self, transport: AsyncTransport) -> None:
        self.transport = transport

    async def run(self, operation: Generator[Step, Any, T], reply: Any = None) -> T:
        """As :meth:`SyncExecutor.run`."""
        try:
            step = operation.send(reply)
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
        _, reply = await self.transport.call_blocking_many([blocking, _evalsha(step)])
        try:
            reply = _settled(reply)
        except NoScriptError:  # SCRIPT FLUSH, a restart: load it, run it again
            reply = await self.execute(step)
        return await self.run(operation, reply)

    async def _pipeline(self, step: Pipeline) -> list[Any]:
        sent: list[Script] = []
        waiters = []
        for script in step.scripts:  # written out at once; the next is built meanwhile
            waiters.append(await self.transport.send_now(_evalsha(script)))
            sent.append(script)
        results = _Results(step)
        async with asyncio.timeout(self.transport.command_timeout):
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

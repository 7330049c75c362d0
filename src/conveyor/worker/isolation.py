"""``isolation="process"``: run one job in a child process that can be killed.

A thread cannot be stopped: a sync job that hangs past its timeout keeps its thread busy,
and an abort can only raise a flag. A job declared with ``isolation="process"`` runs in a
process of its own instead, started from a fork server (so it does not inherit the
worker's event loop and threads), and is killed with SIGKILL at its hard timeout or when
someone aborts it. The price: a process start per job (milliseconds), arguments and result
crossing a pipe, and the task must be importable by name (defined at module level).
``current_job()`` is not available inside such a job. The job's timeout includes the
process start-up. A script that runs a ``Worker`` itself needs the usual
``if __name__ == "__main__":`` guard: the fork server imports the main module.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import multiprocessing
import traceback
from multiprocessing.connection import Connection
from typing import Any

_context: Any = None


class IsolatedJobError(Exception):
    """The job raised in its child process; ``kind`` names the original exception type."""

    def __init__(self, kind: str, message: str, remote_traceback: str) -> None:
        self.kind = kind
        self.remote_traceback = remote_traceback
        super().__init__(f"{kind}: {message}")


class ProcessDied(Exception):
    """The job's child process ended without a result (killed, crashed, or exited)."""


def _find(module: str, qualname: str) -> Any:
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    return getattr(target, "function", target)  # the module holds the Task; run its function


def _child(conn: Connection, module: str, qualname: str, args: list[Any], kwargs: dict[str, Any]) -> None:
    try:
        function = _find(module, qualname)
        result = function(*args, **kwargs)
        if inspect.isawaitable(result):
            result = asyncio.run(_awaited(result))
        conn.send(("ok", result))
    except BaseException as exc:
        conn.send(("error", (type(exc).__qualname__, str(exc), traceback.format_exc())))
    finally:
        conn.close()


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def check_importable(function: Any, task_name: str) -> tuple[str, str]:
    """Where the child finds the function; a clear error when it cannot."""
    module, qualname = function.__module__, function.__qualname__
    if "<locals>" in qualname or module == "__main__":
        raise ValueError(
            f"task {task_name!r} uses isolation='process', so it must be defined at module level "
            f"of an importable module (it is {module}.{qualname})"
        )
    return module, qualname


async def run_in_process(function: Any, task_name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Run ``function(*args, **kwargs)`` in a new child process; kill it if this is cancelled."""
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
    module, qualname = check_importable(function, task_name)
    receiver, sender = _context.Pipe(duplex=False)
    process = _context.Process(
        target=_child,
        args=(sender, module, qualname, args, kwargs),
        name=f"conveyor-job-{task_name}",
        daemon=True,
    )
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, process.start)
    sender.close()
    ready: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(receiver.fileno(), readable)
    try:
        await ready
        try:
            status, value = receiver.recv()
        except EOFError:
            await loop.run_in_executor(None, process.join)
            raise ProcessDied(
                f"the job's process ended without a result (exit code {process.exitcode})"
            ) from None
    except asyncio.CancelledError:
        process.kill()  # the hard timeout, an abort, or the worker stopping
        raise
    finally:
        loop.remove_reader(receiver.fileno())
        receiver.close()
        if process.is_alive() or process.exitcode is None:
            await loop.run_in_executor(None, process.join)
        process.close()
    if status == "error":
        raise IsolatedJobError(*value)
    return value

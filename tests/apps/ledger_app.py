"""Tasks that write every execution to the ledger (``tests/chaos/ledger.py``), and a worker
entry point for the chaos tests: ``python -m tests.apps.ledger_app``.

Configured by environment variables, since the tests run it as a separate process they
SIGKILL: ``CONVEYOR_REDIS_URL``, ``TEST_QUEUE``, ``CONVEYOR_LEDGER_DIR``, and
``CHAOS_LEASE``, ``CHAOS_SWEEP``, ``CHAOS_CONCURRENCY``, ``CHAOS_MAX_CRASHES``,
``CHAOS_ALONE_AFTER``, ``CHAOS_KEEP_COMPLETED``. Finished jobs are kept without limit
(unless ``CHAOS_KEEP_COMPLETED=0``), so the checker can read every job's final state.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

from conveyor import Tasks, current_job, ops
from conveyor.backoff import Fixed
from conveyor.redis.endpoint import Endpoint
from conveyor.redis.resp_async import FastAsyncTransport
from tests.chaos.ledger import LedgerWriter

tasks = Tasks(queue=os.environ.get("TEST_QUEUE", "ledger"))
_writer: LedgerWriter | None = None


def ledger() -> LedgerWriter:
    global _writer
    if _writer is None:
        _writer = LedgerWriter(os.environ["CONVEYOR_LEDGER_DIR"])
    return _writer


def _identity() -> tuple[str, str]:
    job = current_job()
    # The fencing token is not public API; the ledger needs it to tell attempts apart.
    return job.id, str(job._job.claimed.token)


@tasks.task
async def work(n: int, sleep: float = 0.0) -> int:
    """A no-op (or a sleep) recorded in the ledger: started, then finished."""
    job_id, token = _identity()
    ledger().started(job_id, token)
    if sleep:
        await asyncio.sleep(sleep)
    ledger().finished(job_id, token)
    return n


@tasks.task(retries=5, backoff=Fixed(0.05))
async def flaky(n: int, failures: int = 1) -> int:
    """Fails its first ``failures`` attempts, then succeeds (retries through the fail script)."""
    job_id, token = _identity()
    ledger().started(job_id, token)
    if current_job().attempt <= failures:
        ledger().finished(job_id, token, "raised")
        raise RuntimeError(f"planned failure of attempt {current_job().attempt}")
    ledger().finished(job_id, token)
    return n


@tasks.task
def spin(seconds: float) -> int:
    """A sync task busy in pure Python for ``seconds`` (holds the GIL most of the time)."""
    job_id, token = _identity()
    ledger().started(job_id, token)
    deadline = time.monotonic() + seconds
    count = 0
    while time.monotonic() < deadline:
        count += sum(i * i for i in range(200))
    ledger().finished(job_id, token)
    return count


@tasks.task
async def hog(seconds: float) -> None:
    """An async task that blocks the event loop for ``seconds`` (a bug users do write)."""
    job_id, token = _identity()
    ledger().started(job_id, token)
    time.sleep(seconds)  # noqa: ASYNC251 -- on purpose: the loop is blocked
    ledger().finished(job_id, token)


_chat: FastAsyncTransport | None = None


@tasks.task(retries=0)
async def chatter(n: int) -> None:
    """Talks to Redis until its timeout cancels it, mid-call; checks every reply is its own.

    ECHO on the multiplexed connection and BLPOP on blocking ones, through one transport
    shared by all jobs of the process, the way a task uses its own client.
    """
    global _chat
    if _chat is None:
        _chat = FastAsyncTransport(Endpoint.from_url(os.environ["CONVEYOR_REDIS_URL"]))
    job_id, token = _identity()
    ledger().started(job_id, token)
    i = 0
    while True:
        i += 1
        tag = f"{job_id}:{i}"
        reply = await _chat.call("ECHO", tag)
        if reply != tag:
            ledger().anomaly(job_id, f"sent ECHO {tag}, got {reply!r}")
        if i % 4 == 0:
            popped = await _chat.call_blocking("BLPOP", f"chatter:{job_id}", 0.01)
            if popped is not None:
                ledger().anomaly(job_id, f"BLPOP on an empty list returned {popped!r}")


@tasks.task
async def suicide() -> None:
    """Kills its own worker process, every time (a segfaulting C extension, an OOM kill)."""
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    from conveyor import Worker
    from conveyor.cli.logs import configure

    configure(os.environ.get("CHAOS_LOG_LEVEL", "warning"))
    env: dict[str, Any] = os.environ
    keep_all = ops.Retention(-1, -1)
    Worker(
        tasks,
        url=env["CONVEYOR_REDIS_URL"],
        concurrency=int(env.get("CHAOS_CONCURRENCY", "50")),
        lease=float(env.get("CHAOS_LEASE", "2")),
        sweep_interval=float(env.get("CHAOS_SWEEP", "0.5")),
        max_crashes=int(env.get("CHAOS_MAX_CRASHES", "1000")),
        alone_after=int(env["CHAOS_ALONE_AFTER"]) if env.get("CHAOS_ALONE_AFTER") else None,
        shutdown_grace=float(env.get("CHAOS_GRACE", "5")),
        # CHAOS_KEEP_COMPLETED=0: completed jobs are deleted at once (the history suite).
        completed=ops.Retention(0, 0) if env.get("CHAOS_KEEP_COMPLETED") == "0" else keep_all,
        failed=keep_all,
    ).run()


if __name__ == "__main__":
    main()

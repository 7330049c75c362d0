"""Worker processes to kill and restart, a paced producer, and the knobs of the chaos runs.

Sizes come from ``CONVEYOR_CHAOS_*`` environment variables: the defaults are the fast
variants that ``make test`` runs; ``make chaos`` sets the full sizes.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from ledger import LedgerWriter, job_states

from conveyor import Client, Tasks
from conveyor.task import Task, TaskCall

ROOT = Path(__file__).resolve().parents[2]


def ledger_work(queue: str) -> Task[Any, int]:
    """``tests.apps.ledger_app.work`` on ``queue``, as a test enqueues it: a stub with its
    signature (the worker processes import the real task, which writes the ledger)."""
    tasks = Tasks(queue=queue)

    @tasks.task
    async def work(n: int, sleep: float = 0.0) -> int: ...

    return work


def knob(name: str, default: float) -> float:
    return float(os.environ.get(f"CONVEYOR_CHAOS_{name}", default))


FULL = os.environ.get("CONVEYOR_CHAOS_FULL") == "1"
full_only = pytest.mark.skipif(not FULL, reason="a variant run by make chaos only (CONVEYOR_CHAOS_FULL=1)")
"""For the variants of a fault that make test leaves to make chaos, so that make test stays
within its time: each fault keeps at least one variant in make test."""


def report(name: str, row: dict[str, Any]) -> None:
    """Print a result row, and append it to $CONVEYOR_CHAOS_REPORT (JSON lines) when set."""
    line = json.dumps({"run": name, **row})
    print(line)
    target = os.environ.get("CONVEYOR_CHAOS_REPORT")
    if target:
        with open(target, "a") as out:
            out.write(line + "\n")


class Workers:
    """``count`` worker processes of ``tests.apps.ledger_app``; kills and restarts are recorded."""

    def __init__(self, url: str, queue: str, ledger_dir: Path, count: int = 2, **env: Any) -> None:
        self.env = {
            **os.environ,
            "CONVEYOR_REDIS_URL": url,
            "TEST_QUEUE": queue,
            "CONVEYOR_LEDGER_DIR": str(ledger_dir),
            "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}",  # this checkout's conveyor
            **{k: str(v) for k, v in env.items()},
        }
        self.procs: list[subprocess.Popen[bytes]] = []
        self.kills: dict[int, float] = {}
        self.exits: dict[int, int] = {}
        self.restarts = 0
        for _ in range(count):
            self.procs.append(self._spawn())

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "tests.apps.ledger_app"], env=self.env, cwd=ROOT)

    def kill_one(self) -> int:
        """SIGKILL a random worker and start a new one in its place; returns the killed pid."""
        index = random.randrange(len(self.procs))
        victim = self.procs[index]
        victim.send_signal(signal.SIGKILL)
        self.kills[victim.pid] = time.monotonic()
        victim.wait()
        self.procs[index] = self._spawn()
        self.restarts += 1
        return victim.pid

    def restart_exited(self) -> int:
        """Start a new worker for each one that exited by itself (a crash point); returns how many."""
        count = 0
        for index, proc in enumerate(self.procs):
            code = proc.poll()
            if code is not None:
                self.exits[proc.pid] = code
                self.kills.setdefault(proc.pid, time.monotonic())
                self.procs[index] = self._spawn()
                self.restarts += 1
                count += 1
        return count

    def disarm(self) -> None:
        """Workers started from now on run without crash points."""
        self.env.pop("CONVEYOR_FAULT_POINT", None)

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def stop(self, timeout: float = 30) -> list[int]:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = []
        for proc in self.procs:
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            # A worker still importing when SIGTERM came dies of it (-15): its handlers are
            # installed before it claims anything, so it held nothing. That counts as clean.
            codes.append(0 if code == -signal.SIGTERM else code)
        return codes


class Producer(threading.Thread):
    """Enqueues ``calls`` in batches at about ``rate`` jobs/s, recording each accepted batch."""

    def __init__(
        self,
        url: str,
        ledger_dir: Path,
        calls: Sequence[TaskCall[Any]],
        rate: float,
        batch: int = 50,
        on_error: Callable[[BaseException], None] | None = None,
        **client_options: Any,
    ) -> None:
        super().__init__(daemon=True)
        self.client_options = client_options
        self.url = url
        self.ledger_dir = ledger_dir
        self.calls = calls
        self.rate = rate
        self.batch = batch
        self.errors: list[BaseException] = []
        self.error_after: list[float] = []
        """Seconds each failed call took before it raised."""
        self.slowest = 0.0
        """Seconds the slowest accepted call took."""
        self.on_error = on_error
        self.done = threading.Event()

    def run(self) -> None:
        writer = LedgerWriter(self.ledger_dir, "producer")
        start = time.monotonic()
        try:
            with Client.from_url(self.url, **self.client_options) as client:
                for offset in range(0, len(self.calls), self.batch):
                    chunk = self.calls[offset : offset + self.batch]
                    due = start + offset / self.rate
                    pause = due - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
                    called = time.monotonic()
                    try:
                        handles = client.enqueue_many(chunk)
                    except Exception as exc:  # not accepted: not recorded
                        self.errors.append(exc)
                        self.error_after.append(time.monotonic() - called)
                        if self.on_error is None:
                            raise
                        self.on_error(exc)
                        continue
                    self.slowest = max(self.slowest, time.monotonic() - called)
                    writer.accepted(h.id for h in handles)
        finally:
            writer.close()
            self.done.set()


def finished(client: Client, queue: str) -> dict[str, int]:
    """Completed, failed and cancelled counts, read straight from their sets."""
    keys = client.keys(queue)
    replies = client.transport.call_many(
        [("ZCARD", keys.completed), ("ZCARD", keys.failed), ("ZCARD", keys.cancelled)]
    )
    return dict(zip(("completed", "failed", "cancelled"), map(int, replies), strict=True))


def final_states(client: Client, queue: str, records: Any) -> dict[str, str | None]:
    """The state in Redis of every job the ledger says was accepted."""
    return job_states(client.transport, client.keys(queue).job_prefix, list(records.accepted))


def settled(states: dict[str, str | None]) -> bool:
    """Every job finished, or unknown to Redis (a job Redis lost stays lost: no use waiting)."""
    return all(state in ("completed", "failed", "cancelled") or state is None for state in states.values())


def wait_terminal(client: Client, queue: str, total: int, timeout: float, tick: Callable[[], None]) -> float:
    """Call ``tick`` every 0.1 s until ``total`` jobs are finished; returns the time it took."""
    start = time.monotonic()
    while True:
        counts = finished(client, queue)
        if sum(counts.values()) >= total:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not drained in {timeout} s: {counts}")
        tick()
        time.sleep(0.1)

"""``conveyor dev``: Redis, a worker and a demo workload, started and stopped together."""

from __future__ import annotations

import fcntl
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..client import Client
from ..errors import ConfigurationError
from ..job import JobState
from ..redis.connect import redact
from ..task import TaskCall
from ..worker.children import die_with_parent
from .demo import checksum, flaky_call, resize_image, tasks
from .server import RedisServer


def _workload(count: int) -> list[TaskCall[Any]]:
    calls: list[TaskCall[Any]] = []
    for i in range(count):
        roll = random.random()
        if roll < 0.6:
            calls.append(resize_image.with_options(priority=random.choice([0, 0, 0, 5])).call(i, width=320))
        elif roll < 0.9:
            calls.append(checksum.call(f"document-{i}"))
        elif roll < 0.95:
            calls.append(flaky_call.call(i))
        else:
            calls.append(resize_image.with_options(delay=random.uniform(1, 3)).call(i))
    return calls


LOCK_FILE = "conveyor-dev.lock"
"""Held (``flock``) by the ``conveyor dev`` whose embedded server uses the directory; names it."""

MAX_DATA_DIRECTORIES = 20


@dataclass
class DataDirectory:
    """A data directory of the embedded server, locked for this ``conveyor dev`` alone."""

    path: Path
    lock: IO[str]
    """Open for as long as the server runs: the kernel drops the lock when this process
    ends, however it ends, so a crashed run never leaves a directory claimed."""
    busy: list[tuple[Path, str]] = field(default_factory=list)
    """The directories passed over, each with what its lock file says of its holder."""

    def note(self, text: str) -> None:
        """Tell the lock file who holds it, for the message another run prints."""
        self.lock.seek(0)
        self.lock.truncate()
        self.lock.write(text)
        self.lock.flush()

    def release(self) -> None:
        self.lock.close()


def claim_data_directory(state_dir: Path) -> DataDirectory:
    """Lock ``state_dir/redis``, or when another ``conveyor dev`` holds it, ``redis-2``, ...

    Two servers on one directory would write the same append-only file, and each would
    load what the other wrote at its next start: one run's workers listed as live in the
    other's. A second run gets a directory of its own rather than a refusal: two demos at
    once are a fair thing to want, and the message names the run that holds the first.
    """
    busy: list[tuple[Path, str]] = []
    for n in range(1, MAX_DATA_DIRECTORIES + 1):
        path = state_dir / ("redis" if n == 1 else f"redis-{n}")
        path.mkdir(parents=True, exist_ok=True)
        lock = (path / LOCK_FILE).open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            busy.append((path, lock.read().strip() or "conveyor dev"))
            lock.close()
            continue
        claimed = DataDirectory(path, lock, busy)
        claimed.note(f"conveyor dev, pid {os.getpid()}")
        return claimed
    raise ConfigurationError(
        f"{MAX_DATA_DIRECTORIES} runs of conveyor dev already use {state_dir}: "
        + "; ".join(f"{path} ({holder})" for path, holder in busy)
    )


def _start_embedded(data: DataDirectory, console: Console) -> RedisServer:
    for path, holder in data.busy:
        console.print(f"[yellow]{path} is in use by another {holder}[/yellow]")
    if data.busy:
        console.print(
            f"[yellow]so this run keeps its own data, in {data.path}: the two runs share no jobs "
            "and no workers[/yellow]"
        )
    server = RedisServer(directory=data.path).start()
    data.note(f"conveyor dev, pid {os.getpid()}, Redis on 127.0.0.1:{server.port}")
    console.print(
        f"started embedded Redis ({Path(server.binary).name}) on 127.0.0.1:{server.port}, data in {data.path}"
    )
    return server


def run_dev(*, job_count: int, exit_after: bool, state_dir: str, console: Console) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server: RedisServer | None = None
    data: DataDirectory | None = None
    worker: subprocess.Popen[bytes] | None = None
    url = os.environ.get("CONVEYOR_REDIS_URL")
    try:
        if url:
            console.print(f"using Redis at {redact(url)}")
        else:
            data = claim_data_directory(Path(state_dir))
            server = _start_embedded(data, console)
            url = server.url
        env = {**os.environ, "CONVEYOR_REDIS_URL": url}
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "conveyor",
                "worker",
                "conveyor.dev.demo:tasks",
                "--concurrency",
                "50",
                "--log-level",
                "warning",
            ],
            env=env,
            preexec_fn=die_with_parent,
        )
        console.print(f"started a worker (pid {worker.pid}) for conveyor.dev.demo:tasks on queue 'demo'")
        with Client.from_url(url) as client:
            client.purge("demo", [s for s in JobState if s is not JobState.ACTIVE])
            started = time.perf_counter()
            client.enqueue_many(_workload(job_count))
            console.print(
                f"enqueued {job_count:,} demo jobs in one round trip "
                f"({(time.perf_counter() - started) * 1000:.0f} ms)"
            )
            with Progress(
                TextColumn("[bold]demo"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
                console=console,
            ) as bar:
                progress = bar.add_task("jobs", total=job_count, detail="")
                while not stop.is_set():
                    counts = client.counts("demo")
                    finished = counts["completed"] + counts["failed"]
                    bar.update(
                        progress,
                        completed=finished,
                        detail=f"active {counts['active']}, delayed {counts['delayed']}, "
                        f"failed {counts['failed']}",
                    )
                    if finished >= job_count:
                        break
                    if worker.poll() is not None:
                        console.print(f"[red]the worker exited with code {worker.returncode}[/red]")
                        return 1
                    stop.wait(0.2)
            table = Table(title="queue 'demo'")
            for state in JobState:
                table.add_column(state.value, justify="right")
            counts = client.counts("demo")
            table.add_row(*(f"{counts[s.value]:,}" for s in JobState))
            console.print(table)
            console.print(f"demo finished: {counts['completed']} completed, {counts['failed']} failed")
        if not exit_after and not stop.is_set():
            console.print(
                "the worker keeps running. Try, in another terminal:\n"
                f"  CONVEYOR_REDIS_URL='{url}' conveyor enqueue resize_image 7 --queue demo --wait 5\n"
                "Ctrl-C stops everything."
            )
            stop.wait()
        return 0
    finally:
        if worker and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        if server:
            server.stop()
        if data:  # after the server stopped: the next run may start on its files
            data.release()
        console.print("stopped")


__all__ = ["run_dev", "tasks"]

"""``conveyor dev``: Redis, a worker and a demo workload, started and stopped together."""

from __future__ import annotations

import fcntl
import os
import random
import re
import shlex
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
from rich.text import Text

from ..client import Client
from ..errors import ConfigurationError
from ..history.store import ENV_URL as ENV_HISTORY_URL
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
    # Ctrl-C signals the terminal's whole foreground process group, the server included, and
    # a server that stopped at once would leave the draining worker unable to hand its jobs
    # back. A blocked signal stays blocked across fork and exec: the server never sees SIGINT,
    # and this process stops it (SIGTERM) once the worker is gone.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        server = RedisServer(directory=data.path).start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    data.note(f"conveyor dev, pid {os.getpid()}, Redis on 127.0.0.1:{server.port}")
    console.print(
        f"started embedded Redis ({Path(server.binary).name}) on 127.0.0.1:{server.port}, data in {data.path}"
    )
    return server


_LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d (\d\d:\d\d:\d\d),\d+ (\w+)\s+conveyor\.([\w.]+): (.*)")


def _forward_output(stream: IO[bytes], console: Console) -> None:
    """Print the worker's log lines through the console, which puts them above the progress
    display; written to the terminal by the worker itself, they cut through it."""
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace").rstrip()
        if match := _LOG_LINE.fullmatch(line):  # the date and the package name are noise here
            when, level, logger, message = match.groups()
            line = f"{when} {logger} {level.lower()}: {message}"
        if line:
            console.print(Text(line, style="dim"))


def _history_url(run: _Run, state_dir: Path) -> str:
    """The history store of this run: the user's (``CONVEYOR_HISTORY_URL``), else a SQLite
    file beside the embedded server's data, or in the state directory for a Redis of the
    user's own -- history with no setup, as in production with PostgreSQL."""
    configured = os.environ.get(ENV_HISTORY_URL)
    if configured:
        return configured
    directory = run.data.path if run.data is not None else state_dir
    directory.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(directory / 'history.db').resolve()}"


def _start_worker(
    url: str, history_url: str, console: Console
) -> tuple[subprocess.Popen[bytes], threading.Thread]:
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
        env={**os.environ, "CONVEYOR_REDIS_URL": url, ENV_HISTORY_URL: history_url},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=die_with_parent,
        # Out of the terminal's process group: one Ctrl-C reaches this process alone, which
        # stops the worker with one SIGTERM (in the group, the worker took the SIGINT and then
        # the SIGTERM for a second signal, and stopped at once).
        process_group=0,
    )
    assert worker.stdout is not None
    forwarder = threading.Thread(
        target=_forward_output, args=(worker.stdout, console), name="worker-output", daemon=True
    )
    forwarder.start()
    console.print(f"started a worker (pid {worker.pid}) for conveyor.dev.demo:tasks on queue 'demo'")
    return worker, forwarder


def _conveyor_for_another_terminal() -> tuple[list[str], str]:
    """How a new terminal runs this ``conveyor``: the lines to paste first and the command.

    A new terminal has neither this one's directory nor, unless activated, the virtual
    environment on its PATH (``make run`` activates nothing): inside a virtual environment
    the command is the path of its script.
    """
    script = Path(sys.prefix) / "bin" / "conveyor"
    if sys.prefix == sys.base_prefix or not script.exists():
        return [], "conveyor"
    here = Path.cwd()
    if script.is_relative_to(here):
        return [f"cd {shlex.quote(str(here))}"], str(script.relative_to(here))
    return [], shlex.quote(str(script))


def _print_try_commands(url: str, url_from_environment: bool, history_url: str, console: Console) -> None:
    setup, conveyor = _conveyor_for_another_terminal()
    if url_from_environment:  # the user's own URL: not echoed, it may hold a password
        note = " (with CONVEYOR_REDIS_URL set as in this one)"
    else:
        note = ""
        setup.append(f"export CONVEYOR_REDIS_URL={shlex.quote(url)}")
    if not os.environ.get(ENV_HISTORY_URL):
        setup.append(f"export CONVEYOR_HISTORY_URL={shlex.quote(history_url)}")
    commands = [
        *setup,
        f"{conveyor} enqueue resize_image 7 --queue demo --wait 5",
        f"{conveyor} info",
        f"{conveyor} jobs --queue demo --state completed --limit 5",
        f"{conveyor} history search --queue demo --state failed --limit 5",
    ]
    console.print(f"The worker keeps running. Try it from another terminal{note}:", highlight=False)
    for line in commands:  # one line each, however narrow the terminal: they are pasted
        console.print(Text(f"  {line}", style="cyan"), soft_wrap=True)
    if conveyor != "conveyor":
        venv = Path(conveyor).parent.parent
        console.print(f"(after `source {venv}/bin/activate`, plain `conveyor` will do)", highlight=False)
    console.print("Ctrl-C here stops everything.", highlight=False)


@dataclass
class _Run:
    """What one ``conveyor dev`` started, stopped in reverse order however the run ends."""

    console: Console
    stop: threading.Event = field(default_factory=threading.Event)
    data: DataDirectory | None = None
    server: RedisServer | None = None
    worker: subprocess.Popen[bytes] | None = None
    forwarder: threading.Thread | None = None
    worker_told_to_stop: bool = False

    def on_signal(self, signum: int, frame: object) -> None:
        # A second Ctrl-C while the worker drains: it stops at once (and still hands its
        # jobs back). Printing is left to the main thread, which may hold the console.
        if self.stop.is_set() and self.worker_told_to_stop and self.worker and self.worker.poll() is None:
            self.worker.send_signal(signal.SIGTERM)
        self.stop.set()

    def show_demo(self, client: Client, job_count: int) -> bool:
        """Follow the demo jobs to the end; False when the worker exited meanwhile."""
        with Progress(
            TextColumn("[bold]demo"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=self.console,
        ) as bar:
            progress = bar.add_task("jobs", total=job_count, detail="")
            while not self.stop.is_set():
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
                if self.worker is not None and self.worker.poll() is not None:
                    self.console.print(f"[red]the worker exited with code {self.worker.returncode}[/red]")
                    return False
                self.stop.wait(0.2)
        table = Table(title="queue 'demo'")
        for state in JobState:
            table.add_column(state.value, justify="right")
        counts = client.counts("demo")
        table.add_row(*(f"{counts[s.value]:,}" for s in JobState))
        self.console.print(table)
        done = f"{counts['completed']} completed, {counts['failed']} failed"
        if self.stop.is_set():
            finished = counts["completed"] + counts["failed"]
            self.console.print(
                f"demo interrupted: {finished} of {job_count} jobs finished ({done})", highlight=False
            )
        else:
            deliberate = " (flaky_call out of retries: deliberate failures)" if counts["failed"] else ""
            self.console.print(f"demo finished: {done}{deliberate}", highlight=False)
        return True

    def close(self) -> None:
        if self.stop.is_set():
            self.console.print(
                "stopping: the worker finishes its running jobs (Ctrl-C again: at once)", highlight=False
            )
        if self.worker and self.worker.poll() is None:
            self.worker_told_to_stop = True
            self.worker.send_signal(signal.SIGTERM)
            try:
                self.worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.worker.kill()
                self.worker.wait()
        if self.forwarder:  # the worker's last lines, before "stopped"
            self.forwarder.join(timeout=5)
        if self.server:
            self.server.stop()
        if self.data:  # after the server stopped: the next run may start on its files
            self.data.release()
        self.console.print("stopped")


def run_dev(*, job_count: int, exit_after: bool, state_dir: str, console: Console) -> int:
    run = _Run(console)
    signal.signal(signal.SIGINT, run.on_signal)
    signal.signal(signal.SIGTERM, run.on_signal)
    url = os.environ.get("CONVEYOR_REDIS_URL")
    url_from_environment = bool(url)
    try:
        if url:
            console.print(f"using Redis at {redact(url)}")
        else:
            run.data = claim_data_directory(Path(state_dir))
            run.server = _start_embedded(run.data, console)
            url = run.server.url
        history_url = _history_url(run, Path(state_dir))
        run.worker, run.forwarder = _start_worker(url, history_url, console)
        if not os.environ.get(ENV_HISTORY_URL):
            console.print(f"job history: {history_url} (set CONVEYOR_HISTORY_URL for another store)")
        with Client.from_url(url) as client:
            client.purge("demo", [s for s in JobState if s is not JobState.ACTIVE])
            started = time.perf_counter()
            client.enqueue_many(_workload(job_count))
            console.print(
                f"enqueued {job_count:,} demo jobs in one round trip "
                f"({(time.perf_counter() - started) * 1000:.0f} ms); about 1 in 20 is flaky_call, "
                "which fails now and then on purpose to show retries",
                highlight=False,
            )
            if not run.show_demo(client, job_count):
                return 1
        if not exit_after and not run.stop.is_set():
            _print_try_commands(url, url_from_environment, history_url, console)
            run.stop.wait()
        return 0
    finally:
        run.close()


__all__ = ["run_dev", "tasks"]

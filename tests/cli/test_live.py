"""The live views (issue 16): ``info --watch``, ``workers --watch``, ``events`` and ``logs``,
run as a user runs them -- real processes against the session's server, output piped, so they
print their plain (non-terminal) form."""

from __future__ import annotations

import asyncio
import json
import os
import queue as queues
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from conveyor import AsyncClient, Client, Tasks, Worker, current_job
from conveyor.cli.live import new_lines

from helpers import run_cli as cli
from helpers import running_worker

ROOT = Path(__file__).resolve().parents[2]

COMPLETED, FAILED, RETRIED, WAITING = 5, 1, 1, 4
"""The workload of the info tests: jobs completed, dead-lettered (after one retry), still waiting."""


def run_workload(url: str, client: Client, queue: str) -> None:
    tasks = Tasks(queue=queue)

    @tasks.task
    async def noop() -> None: ...

    @tasks.task(retries=1, backoff=0)
    async def boom() -> None:
        raise RuntimeError("always")

    client.enqueue_many([noop.call() for _ in range(COMPLETED)] + [boom.call()])
    asyncio.run(asyncio.wait_for(Worker(tasks, url=url, burst=True).serve(), 15))
    client.enqueue_many([noop.call() for _ in range(WAITING)])


def per_minute(count: int) -> tuple[float, float]:
    """The bounds of a rate over the 5-minute window: the window's 5 whole minutes plus the
    part of the current one that has passed."""
    return count / 6, count / 5


@pytest.mark.serial  # rates over a window of minutes
def test_info_watch_prints_a_plain_table_per_refresh(url: str, client: Client, queue: str) -> None:
    run_workload(url, client, queue)
    out = cli(url, "info", "--watch", "--interval", "0.2", "--count", "3", "-q", queue).stdout
    frames = [block.splitlines() for block in out.strip().split("\n\n")]
    assert len(frames) == 3, out
    for title, header, row, *rest in frames:
        assert "Queues on" in title and "last 5 minutes" in title and rest == []
        shown = dict(zip(header.split(), row.split(), strict=True))
        assert shown["queue"] == queue
        assert (shown["waiting"], shown["delayed"], shown["active"], shown["failed"]) == ("4", "0", "0", "1")
        assert (shown["paused"], shown["workers"]) == ("no", "0")
        low, high = per_minute(COMPLETED)
        assert round(low, 1) <= float(shown["completed/min"]) <= round(high, 1)
        low, high = per_minute(RETRIED)
        assert round(low, 1) <= float(shown["failed/min"]) <= round(high, 1)
        assert round(low, 1) <= float(shown["retried/min"]) <= round(high, 1)
        for column in ("wait_p95", "run_p95", "oldest_waiting"):
            assert shown[column].endswith(("ms", "s")), (column, shown[column])


@pytest.mark.serial  # rates over a window of minutes
def test_info_watch_json_is_a_line_per_queue_per_refresh(url: str, client: Client, queue: str) -> None:
    run_workload(url, client, queue)
    out = cli(url, "info", "-w", "--json", "--interval", "0.2", "--count", "2", "-q", queue).stdout
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 2 and records[0]["time"] < records[1]["time"]
    for record in records:
        assert record["queue"] == queue
        assert (record["waiting"], record["active"], record["failed"]) == (WAITING, 0, FAILED)
        assert record["completed_in_window"] == COMPLETED
        assert (record["failed_in_window"], record["retried_in_window"]) == (FAILED, RETRIED)
        low, high = per_minute(COMPLETED)
        assert low <= record["completed_per_minute"] <= high
        assert 0 < record["wait_p95_seconds"] < 10 and 0 < record["run_p95_seconds"] < 10
        assert record["oldest_waiting_seconds"] > 0
        assert (record["paused"], record["workers"]) == (False, 0)


def test_watch_options_need_watch(url: str, queue: str) -> None:
    refused = cli(url, "info", "--interval", "1", code=2)
    assert "--interval only applies with --watch" in refused.stderr
    empty = cli(url, "info", "-w", "--count", "1", "-q", queue).stdout
    assert queue in empty and "waiting" in empty  # a queue nothing used yet shows zeros, not an error


async def test_watch_views_show_live_workers(url: str, aclient: AsyncClient, queue: str) -> None:
    tasks = Tasks(queue=queue)
    gate = asyncio.Event()

    @tasks.task
    async def hold() -> None:
        await gate.wait()

    async with running_worker(tasks, url, concurrency=3) as worker:
        await aclient.enqueue(hold)
        await aclient.enqueue(hold)
        try:
            listed = await asyncio.to_thread(cli, url, "workers", "-w", "--count", "1", "--json")
            info = await asyncio.to_thread(cli, url, "info", "-w", "--count", "1", "--json", "-q", queue)
            table = await asyncio.to_thread(cli, url, "workers")
        finally:
            gate.set()
    mine = [json.loads(line) for line in listed.stdout.splitlines()]
    [record] = [r for r in mine if r["id"] == worker.id]
    assert record["queues"] == queue and int(record["concurrency"]) == 3
    assert 0 <= record["heartbeat_age_seconds"] < 10 and record["up_seconds"] >= 0
    [shown] = [json.loads(line) for line in info.stdout.splitlines()]
    assert (shown["workers"], shown["worker_concurrency"]) == (1, 3)
    assert worker.id in table.stdout and "heartbeat" in table.stdout


class Lines:
    """A process's output read line by line in a thread, so that a test can wait for a line."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.lines: queues.Queue[str] = queues.Queue()
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))

    def next(self, timeout: float = 15.0) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queues.Empty:
            raise AssertionError(f"no line within {timeout} s") from None


@pytest.fixture
def started(url: str) -> Iterator[Any]:
    """Starts ``conveyor ARGS`` in a session of its own (as a terminal would, for Ctrl-C)."""
    procs: list[tuple[subprocess.Popen[str], Lines, Lines]] = []

    def start(*args: str) -> tuple[subprocess.Popen[str], Lines, Lines]:
        env = {**os.environ, "CONVEYOR_REDIS_URL": url, "COLUMNS": "250"}
        env.pop("CONVEYOR_QUEUE", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "conveyor", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )
        assert proc.stdout is not None and proc.stderr is not None
        procs.append((proc, Lines(proc.stdout), Lines(proc.stderr)))
        return procs[-1]

    yield start
    for proc, out, err in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for lines in (out, err):
            lines.thread.join(timeout=5)
            lines.stream.close()


def stderr_of(lines: Lines) -> str:
    lines.thread.join(timeout=5)
    return "\n".join(lines.lines.queue)


@pytest.mark.serial  # signals a process
def test_events_follows_new_events_and_stops_on_ctrl_c(client: Client, queue: str, started: Any) -> None:
    tasks = Tasks(queue=queue)

    @tasks.task
    async def noop() -> None: ...

    client.enqueue(noop.with_options(job_id="before"))
    proc, out, err = started("events", "-q", queue)
    assert f"following the events of {queue} from now" in err.next()
    client.enqueue(noop.with_options(job_id="after"))
    client.enqueue_many(
        [noop.with_options(job_id="batch-1").call(), noop.with_options(job_id="batch-2").call()]
    )
    day, moment, kind, ids, *fields = out.next().split()
    assert (kind, ids) == ("enqueued", "after"), "events from before it started are not shown"
    assert len(day) == 10 and len(moment) == 12 and fields == []
    assert out.next().split()[2:] == ["enqueued", "batch-1,batch-2", "count=2"]
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=10) == 0
    assert "Traceback" not in stderr_of(err) and "Aborted" not in stderr_of(err)


@pytest.mark.serial  # signals a process
def test_info_watch_stops_on_ctrl_c(queue: str, started: Any) -> None:
    proc, out, err = started("info", "--watch", "--interval", "0.2", "-q", queue)
    assert "Queues on" in out.next()
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=10) == 0
    assert "Traceback" not in stderr_of(err) and "Aborted" not in stderr_of(err)


def test_events_from_the_start_as_json(url: str, client: Client, queue: str) -> None:
    tasks = Tasks(queue=queue)

    @tasks.task
    async def noop() -> None: ...

    client.enqueue(noop.with_options(job_id="one"))
    client.enqueue(noop.with_options(job_id="two"))
    out = cli(url, "events", "-q", queue, "--from-start", "--count", "2", "--json").stdout
    first, second = (json.loads(line) for line in out.splitlines())
    assert (first["event"], first["job_ids"], first["queue"]) == ("enqueued", ["one"], queue)
    assert second["job_ids"] == ["two"] and first["id"] < second["id"] and first["time"].endswith("Z")


async def follow(url: str, ref: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "CONVEYOR_REDIS_URL": url}
    env.pop("CONVEYOR_QUEUE", None)
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "conveyor", "logs", ref, "--follow",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=ROOT,
    )  # fmt: skip


async def next_line(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    return (await asyncio.wait_for(proc.stdout.readline(), 15)).decode().rstrip("\n")


@pytest.mark.parametrize("ending", ["completes", "fails"])
async def test_logs_follow_prints_lines_as_written_until_the_job_ends(
    url: str, aclient: AsyncClient, queue: str, ending: str
) -> None:
    tasks = Tasks(queue=queue)
    gate = asyncio.Event()

    @tasks.task(retries=0)
    async def chatty() -> str:
        current_job().log("first line")
        await gate.wait()
        current_job().log("second line")
        if ending == "fails":
            raise RuntimeError("gave up")
        return "done"

    async with running_worker(tasks, url):
        handle = await aclient.enqueue(chatty)
        proc = await follow(url, f"{queue}/{handle.id}")
        assert await next_line(proc) == "first line"
        gate.set()
        assert await next_line(proc) == "second line"
        code = await asyncio.wait_for(proc.wait(), 15)
    assert proc.stderr is not None
    said = (await proc.stderr.read()).decode()
    if ending == "completes":
        assert code == 0 and f"job {queue}/{handle.id} completed" in said
    else:
        assert code == 1 and "failed: RuntimeError: gave up" in said
    printed = cli(url, "logs", handle.id, "-q", queue, "--json").stdout
    assert [json.loads(line)["line"] for line in printed.splitlines()] == ["first line", "second line"]


def test_logs_of_a_missing_job(url: str, queue: str) -> None:
    missing = cli(url, "logs", f"{queue}/nope", code=1)
    assert "no job nope" in missing.stderr and "Traceback" not in missing.stderr


def test_new_lines_past_the_cap() -> None:
    before = [f"line {i}" for i in range(10)]
    assert new_lines(before, [*before, "line 10"]) == ["line 10"]
    assert new_lines(before, before) == []
    capped = [f"line {i}" for i in range(3, 13)]  # the cap of 10 dropped the three oldest
    assert new_lines(before, capped) == ["line 10", "line 11", "line 12"]
    assert new_lines(before, ["other"] * 10) == ["other"] * 10, "nothing in common: all new"
    assert new_lines([], ["a"]) == ["a"]

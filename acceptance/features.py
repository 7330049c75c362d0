"""Acceptance checks for issue 3 (job features), written against Conveyor's public API only.

Run: ``.venv/bin/python acceptance/features.py [--url redis://...]``. Without ``--url`` a
private server is started (``conveyor.dev.server.RedisServer``); the machine's Redis is never
used. Every check uses queues of its own, real workers (``conveyor.Worker`` in this event
loop, several at once where the feature is about coordination, and ``conveyor worker`` /
``conveyor cancel`` / ``conveyor schedules`` subprocesses where another process matters),
and asserts what the README and docstrings promise. Prints a table; exits 1 if any check
failed. ``--only TEXT[,TEXT...]`` runs the checks whose names contain one of the texts.

The cron check runs 4 schedulers for a code-declared ``* * * * *`` schedule through the
whole run and waits for the next minute boundary if none has passed yet, so a run takes
between ~25 s and ~62 s depending on the clock.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # app.py: tasks importable by name (isolation="process")

import app  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from conveyor import (  # noqa: E402
    AsyncClient,
    Client,
    EnqueueOutcome,
    Fixed,
    Flow,
    JobCancelled,
    JobFailed,
    JobState,
    ResultTimeout,
    Retry,
    RetryAfter,
    Schedule,
    Tasks,
    Worker,
    WorkerSettings,
    chain,
    chord,
    current_job,
)
from conveyor.dev.server import RedisServer  # noqa: E402
from conveyor.hooks import Hooks  # noqa: E402
from conveyor.testing import EagerClient  # noqa: E402

RUN = uuid.uuid4().hex[:6]


def qname(check: str) -> str:
    """A queue of its own for every check (and every run)."""
    return f"acc-{RUN}-{check}"


# --------------------------------------------------------------------------------------
# What the tasks saw. Tasks run in this process (in-process workers), so they record here.

REC: dict[str, list[Any]] = defaultdict(list)
ACTIVE: Counter[tuple[str, str]] = Counter()
PEAK: Counter[tuple[str, str]] = Counter()
GATES: dict[str, asyncio.Event] = {}
ALL = "*all*"  # PEAK[(queue, ALL)]: all jobs of the queue; PEAK[(queue, group)]: one group


def gate(name: str) -> asyncio.Event:
    if name not in GATES:
        GATES[name] = asyncio.Event()
    return GATES[name]


tasks = Tasks(queue=qname("default"))

Q_CRON = qname("cron")
Q_EVERY = qname("every")
cron_tasks = Tasks(queue=Q_CRON)
interval_tasks = Tasks(queue=Q_EVERY)


@cron_tasks.task(name="acc_cron", cron="* * * * *")
async def acc_cron() -> None:
    REC[Q_CRON].append((current_job().id, time.time()))


@interval_tasks.task(name="acc_every", every=timedelta(seconds=1))
async def acc_every() -> None:
    REC[Q_EVERY].append((current_job().id, time.time()))


@tasks.task(name="acc_tick")
async def acc_tick() -> None:
    REC[current_job().queue].append((current_job().id, time.time()))


@tasks.task(name="acc_record")
async def acc_record(value: Any) -> Any:
    REC[current_job().queue].append((value, time.monotonic()))
    return value


@tasks.task(name="acc_busy")
async def acc_busy(group: str | None, seconds: float) -> str | None:
    """Counts how many jobs run at once, per queue and per group."""
    queue = current_job().queue
    REC[queue].append((group, time.monotonic()))
    keys = [(queue, ALL)] + ([(queue, group)] if group is not None else [])
    for key in keys:
        ACTIVE[key] += 1
        PEAK[key] = max(PEAK[key], ACTIVE[key])
    try:
        await asyncio.sleep(seconds)
    finally:
        for key in keys:
            ACTIVE[key] -= 1
    return group


@tasks.task(name="acc_retry_after", retries=0)
async def acc_retry_after(times: int, delay: float) -> str:
    job = current_job()
    runs = REC[job.id]
    runs.append((time.monotonic(), job.attempt, job.retries_left))
    if len(runs) <= times:
        raise RetryAfter(delay, "429 from downstream")
    return "done"


@tasks.task(name="acc_progress")
async def acc_progress(lines: int) -> str:
    job = current_job()
    job.progress({"step": 1, "of": 3})
    for i in range(lines):
        job.log(f"line {i}")
    try:
        job.progress({"blob": "x" * 20_000})  # over the documented 8 KB
        REC[job.id].append("big progress accepted without error")
    except Exception as exc:
        REC[job.id].append(f"big progress refused: {type(exc).__name__}")
    gate(f"{job.id}:reached").set()
    await asyncio.wait_for(gate(f"{job.id}:release").wait(), 15)
    job.progress(100)
    return "ok"


@tasks.task(name="acc_async_abortable", retries=0)
async def acc_async_abortable(seconds: float) -> str:
    job = current_job()
    REC[job.id].append(("started", time.monotonic()))
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        REC[job.id].append(("CancelledError", time.monotonic()))
        raise
    return "ran to the end"


@tasks.task(name="acc_sync_abortable", retries=0)
def acc_sync_abortable(seconds: float) -> str:
    job = current_job()
    REC[job.id].append(("started", time.monotonic()))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if job.cancelled:
            REC[job.id].append(("flag seen", time.monotonic()))
            job.raise_if_cancelled()
            REC[job.id].append(("raise_if_cancelled did not raise", time.monotonic()))
            return "flag seen but not raised"
        time.sleep(0.02)
    return "ran to the end"


@tasks.task(name="acc_double")
async def acc_double(x: int) -> int:
    return 2 * x


@tasks.task(name="acc_parent_sum")
async def acc_parent_sum() -> dict[str, Any]:
    children = current_job().children
    REC[current_job().id].append("parent ran")
    return {
        "sum": sum(c.result for c in children),
        "queues": sorted({c.queue for c in children}),
        "states": [c.state for c in children],
        "results": [c.result for c in children],
    }


@tasks.task(name="acc_parent_outcomes")
async def acc_parent_outcomes() -> list[dict[str, Any]]:
    REC[current_job().id].append("parent ran")
    return [
        {"state": c.state, "result": c.result, "error": (c.error or {}).get("type")}
        for c in current_job().children
    ]


@tasks.task(name="acc_parent_args")
async def acc_parent_args(results: list[int], label: str) -> dict[str, Any]:
    return {"results": results, "label": label}


@tasks.task(name="acc_add_one")
async def acc_add_one(x: int) -> int:
    REC[current_job().queue].append(("add_one", x))
    return x + 1


@tasks.task(name="acc_times_ten")
async def acc_times_ten(x: int) -> int:
    REC[current_job().queue].append(("times_ten", x))
    return x * 10


@tasks.task(name="acc_minus")
async def acc_minus(x: int, y: int) -> int:
    REC[current_job().queue].append(("minus", x))
    return x - y


@tasks.task(name="acc_square")
async def acc_square(n: int) -> int:
    await asyncio.sleep(0.01 * (5 - n % 5))  # finish out of order
    return n * n


@tasks.task(name="acc_collect")
async def acc_collect(results: list[int]) -> list[int]:
    return results


@tasks.task(name="acc_boom", retries=0)
async def acc_boom() -> None:
    raise ValueError("boom")


@tasks.task(name="acc_flaky", retries=1, backoff=Fixed(0.05))
async def acc_flaky() -> str:
    if current_job().attempt == 1:
        raise RuntimeError("first attempt fails")
    return "second attempt"


@tasks.task(name="acc_event_job", retries=2, backoff=Fixed(0.05))
async def acc_event_job(size: int) -> str:
    job = current_job()
    job.progress({"at": job.attempt})
    if job.attempt == 1:
        raise Retry(delay=0.05, reason="once")
    return "x" * size


@tasks.task(name="acc_value_after")
async def acc_value_after(value: int, seconds: float) -> int:
    await asyncio.sleep(seconds)
    REC[f"end:{current_job().id}"].append(time.monotonic())
    return value


@tasks.task(name="acc_add")
def acc_add(a: int, b: int) -> int:
    return a + b


@tasks.task(name="acc_eager_progress")
async def acc_eager_progress(n: int) -> int:
    job = current_job()
    for i in range(n):
        job.progress({"done": i + 1, "of": n})
        job.log(f"step {i + 1}")
    return n


# --------------------------------------------------------------------------------------
# Helpers


@asynccontextmanager
async def workers(
    url: str,
    queues: list[str],
    n: int = 1,
    registry: Tasks = tasks,
    hooks: tuple[Hooks, ...] = (),
    **settings: Any,
) -> AsyncIterator[list[Worker]]:
    """``n`` in-process workers serving ``queues``, stopped on exit."""
    settings.setdefault("shutdown_grace", 1.0)
    ws = [
        Worker(
            registry,
            url=url,
            queues=queues,
            worker_settings=WorkerSettings(**settings),
            hooks=list(hooks),
        )
        for _ in range(n)
    ]
    serving = [asyncio.create_task(w.serve()) for w in ws]
    try:
        yield ws
    finally:
        for w in ws:
            w.stop()
        await asyncio.wait(serving, timeout=15)
        for task in serving:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise RuntimeError(f"worker crashed: {task.exception()!r}")


async def until(predicate: Callable[[], Awaitable[bool] | bool], timeout: float, every: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(every)


async def terminal(client: AsyncClient, queue: str, job_id: str, timeout: float) -> Any:
    """Poll a job (test-side only) until it is in a terminal state; return the snapshot."""
    job = await client.get_job(queue, job_id)
    deadline = time.monotonic() + timeout
    while not job.state.is_terminal and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        job = await client.get_job(queue, job_id)
    return job


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max((sum(1 for t in times[i:] if t < start + window) for i, start in enumerate(times)), default=0)


def on(task: Any, queue: str, **options: Any) -> Any:
    return task.with_options(queue=queue, **options)


async def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "conveyor", *args, "--url", url],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    return await asyncio.to_thread(run)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (not reaped yet) counts as dead
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def read_pid(path: Path) -> str:
    return path.read_text() if path.exists() else "missing"


def process_tree() -> list[str]:
    """Descendants of this process (pid, state, command), for diagnostics."""
    children: dict[int, list[int]] = defaultdict(list)
    info: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            pid = int(stat.parent.name)
            cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:80]
        except (OSError, IndexError, ValueError):
            continue
        try:
            wchan = (stat.parent / "wchan").read_text()
        except OSError:
            wchan = "?"
        children[int(fields[1])].append(pid)
        info[pid] = f"{pid} (parent {fields[1]}) {fields[0]} wchan={wchan} {cmd}"
    out, todo = [], list(children[os.getpid()])
    while todo:
        pid = todo.pop()
        out.append(info[pid])
        todo += children[pid]
    return out


@dataclass
class Ctx:
    url: str
    tmp: Path

    def client(self) -> AsyncClient:
        return AsyncClient.from_url(self.url)


CHECKS: list[tuple[str, Callable[[Ctx], Awaitable[str]]]] = []


def check(name: str) -> Callable[[Callable[[Ctx], Awaitable[str]]], Callable[[Ctx], Awaitable[str]]]:
    def register(fn: Callable[[Ctx], Awaitable[str]]) -> Callable[[Ctx], Awaitable[str]]:
        CHECKS.append((name, fn))
        return fn

    return register


# --------------------------------------------------------------------------------------
# Scheduling


class CronCheck:
    """4 workers run the scheduler for a code-declared ``cron="* * * * *"`` for the whole run.

    Started first and finished last: at least one minute boundary is always observed (the
    run waits for it when the other checks end earlier), so the whole run stays ~60 s.
    """

    name = "cron '* * * * *' declared on the task: 4 schedulers, exactly one job per tick"

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.started = 0.0
        self._cm: Any = None

    async def start(self) -> None:
        self._cm = workers(self.ctx.url, [Q_CRON], n=4, registry=cron_tasks, concurrency=4)
        await self._cm.__aenter__()
        self.started = time.time()

    async def finish(self) -> str:
        first = math.ceil(self.started / 60) * 60
        required = first if first - self.started >= 1.0 else first + 60
        await asyncio.sleep(max(0.0, required + 2.5 - time.time()))
        client = self.ctx.client()
        try:
            states = await client.schedules(Q_CRON)
        finally:
            await client.close()
        stopped = time.time()
        await self._cm.__aexit__(None, None, None)
        runs = REC[Q_CRON]
        ids = [job_id for job_id, _ in runs]
        boundaries = [b for b in range(first, int(stopped) + 1, 60) if b <= stopped - 2.0]
        must = [b for b in boundaries if b >= required]
        per_tick = Counter(math.floor(at / 60) * 60 for _, at in runs)
        detail = (
            f"ticks {[datetime.fromtimestamp(b, UTC).strftime('%H:%M:%S') for b in boundaries]}, "
            f"runs {ids}, next_run {[s.next_run for s in states]}"
        )
        assert len(ids) == len(set(ids)), f"a tick's job ran twice: {detail}"
        assert all(per_tick[b] == 1 for b in must), f"a tick did not run exactly once: {detail}"
        assert sum(per_tick.values()) <= len(boundaries), f"more jobs than ticks: {detail}"
        assert all(at - math.floor(at / 60) * 60 < 5 for _, at in runs), f"a job ran late: {detail}"
        assert len(states) == 1 and states[0].next_run is not None, f"schedules(): {states}"
        nxt = states[0].next_run.timestamp()
        assert nxt % 60 == 0 and stopped < nxt <= stopped + 60, f"next_run not the next minute: {nxt}"
        return f"{len(ids)} job(s) for {len(boundaries)} tick(s), none twice; {detail}"


@check("interval every=1s declared on the task: 4 schedulers, exactly one job per tick")
async def check_interval(ctx: Ctx) -> str:
    async with workers(ctx.url, [Q_EVERY], n=4, registry=interval_tasks, concurrency=4):
        await asyncio.sleep(4.6)
    await asyncio.sleep(0.3)
    runs = list(REC[Q_EVERY])
    ids = [job_id for job_id, _ in runs]
    assert len(ids) == len(set(ids)), f"a tick ran twice: {ids}"
    seconds = sorted(round(at) for _, at in runs)
    assert len(seconds) == len(set(seconds)), f"two jobs for one tick: {runs}"
    assert 3 <= len(runs) <= 6, f"expected ~4-5 ticks in 4.6 s, got {len(runs)}: {ids}"
    gaps = [b - a for a, b in itertools.pairwise(seconds)]
    assert all(g == 1 for g in gaps), f"missing ticks: {seconds}"
    client = ctx.client()
    try:
        _, total = await client.list_jobs(Q_EVERY, "completed")
    finally:
        await client.close()
    assert total == len(runs), f"{total} completed jobs but {len(runs)} runs"
    return f"{len(runs)} ticks, one job each: {ids}"


@check("schedules at run time: add/list/remove, time zone, next run via library and CLI")
async def check_schedule_admin(ctx: Ctx) -> str:
    q = qname("sched-admin")
    client = ctx.client()
    try:
        berlin = Schedule(
            "nightly", "acc_record", queue=q, cron="0 3 * * *", timezone="Europe/Berlin", args=(1,)
        )
        weekly = Schedule("digest", "acc_record", queue=q, cron="0 8 * * 1", args=("weekly",))
        assert await client.add_schedule(berlin) is True, "add_schedule of a new schedule is not True"
        assert await client.add_schedule(weekly) is True
        assert await client.add_schedule(berlin) is False, "re-adding an unchanged schedule is not False"
        states = {s.schedule.name: s for s in await client.schedules(q)}
        assert set(states) == {"nightly", "digest"}, f"schedules(): {sorted(states)}"
        nightly = states["nightly"].next_run
        assert nightly is not None
        local = nightly.astimezone(ZoneInfo("Europe/Berlin"))
        assert (local.hour, local.minute) == (3, 0), f"nightly next_run {nightly} is {local} in Berlin"
        assert timedelta(0) < nightly - datetime.now(UTC) <= timedelta(days=1), nightly
        digest = states["digest"].next_run
        assert digest is not None and digest.astimezone(UTC).weekday() == 0 and digest.hour == 8, digest
        out = await cli(ctx.url, "schedules", "-q", q)
        assert out.returncode == 0, out.stderr
        assert "nightly" in out.stdout and "digest" in out.stdout, out.stdout
        assert await client.remove_schedule(q, "digest") is True
        assert [s.schedule.name for s in await client.schedules(q)] == ["nightly"]
        out2 = await cli(ctx.url, "schedules", "-q", q, "--remove", "nightly")
        assert out2.returncode == 0, out2.stderr
        assert await client.schedules(q) == [], "CLI --remove did not remove"
    finally:
        await client.close()
    return (
        f"nightly 03:00 Berlin -> next_run {nightly:%Y-%m-%d %H:%M} UTC; "
        f"digest {digest:%a %H:%M}; CLI lists and removes"
    )


@check("schedules: ticks missed while no worker ran -- 'skip' vs 'run_once'")
async def check_missed(ctx: Ctx) -> str:
    every = 2.0
    q_skip, q_once = qname("missed-skip"), qname("missed-once")
    client = ctx.client()
    try:
        await client.add_schedule(Schedule("m", "acc_tick", queue=q_skip, every=every))
        await client.add_schedule(Schedule("m", "acc_tick", queue=q_once, every=every, missed="run_once"))
        [state] = await client.schedules(q_skip)
        assert state.next_run is not None
        first = state.next_run.timestamp()
        # no worker runs: ticks `first` and `first + every` pass; start 0.3 s after the second
        await asyncio.sleep(max(0.0, first + every + 0.3 - time.time()))
        started = time.time()
        next_tick = first + 2 * every
        async with workers(ctx.url, [q_skip, q_once], n=2):
            await asyncio.sleep(max(0.0, next_tick - 0.4 - time.time()))
            before = {q: list(REC[q]) for q in (q_skip, q_once)}
            await asyncio.sleep(max(0.0, next_tick + 1.0 - time.time()))
            after = {q: list(REC[q]) for q in (q_skip, q_once)}
    finally:
        await client.close()

    def show(runs: list[Any]) -> list[str]:
        return [f"{job_id} at +{at - first:.2f} s" for job_id, at in runs]

    detail = (
        f"ticks at +0 and +{every:.0f} s missed, workers started at +{started - first:.2f} s, next tick "
        f"+{2 * every:.0f} s; skip ran {show(after[q_skip])}; run_once ran {show(after[q_once])}"
    )
    assert len(before[q_once]) == 1, f"'run_once' should make up exactly once: {detail}"
    assert len(before[q_skip]) == 0, f"'skip' ran a missed tick: {detail}"
    assert len(after[q_skip]) == 1 and len(after[q_once]) == 2, f"the next regular tick: {detail}"
    return detail


@check("job TTL: not started before its deadline -> failed with reason 'expired'")
async def check_ttl(ctx: Ctx) -> str:
    q = qname("ttl")
    client = ctx.client()
    try:
        short = await client.enqueue(on(acc_record, q, ttl=0.3), "short")
        long = await client.enqueue(on(acc_record, q, ttl=timedelta(seconds=30)), "long")
        await asyncio.sleep(0.8)
        async with workers(ctx.url, [q]):
            assert await long.result(timeout=5) == "long"
            job = await terminal(client, q, short.id, 5)
        try:
            await short.result(timeout=1)
            raised = "nothing"
        except JobFailed as exc:
            raised = f"JobFailed({exc})"
    finally:
        await client.close()
    ran = [v for v, _ in REC[q]]
    assert job.state is JobState.FAILED, f"state {job.state}, error {job.error}"
    assert (job.error or {}).get("reason") == "expired", f"error {job.error}"
    assert ran == ["long"], f"the expired job ran: {ran}"
    assert raised.startswith("JobFailed"), f"result() raised {raised}"
    return f"expired job: {job.error}; the 30 s-TTL job ran"


# --------------------------------------------------------------------------------------
# Flow control


@check("pause/resume: a paused queue is not claimed, enqueues go on, resume drains it")
async def check_pause(ctx: Ctx) -> str:
    q = qname("pause")
    client = ctx.client()
    try:
        async with workers(ctx.url, [q], n=2):
            assert await (await client.enqueue(on(acc_record, q), "before")).result(timeout=5) == "before"
            await client.pause(q)
            handles = [await client.enqueue(on(acc_record, q), i) for i in range(5)]
            assert all(h.created for h in handles), "enqueue while paused did not create"
            await asyncio.sleep(1.0)
            counts = await client.counts(q)
            ran_while_paused = len(REC[q]) - 1
            await client.resume(q)
            t0 = time.monotonic()
            results = [await h.result(timeout=5) for h in handles]
            drained = time.monotonic() - t0
    finally:
        await client.close()
    assert ran_while_paused == 0, f"{ran_while_paused} jobs ran while paused"
    assert counts["waiting"] == 5, f"counts while paused: {counts}"
    assert results == list(range(5))
    return f"while paused: {counts['waiting']} waiting, 0 ran; resumed and drained in {drained:.2f} s"


@check("global rate limit (5 per 1 s) with 3 workers: starts per window, other queue unaffected")
async def check_rate(ctx: Ctx) -> str:
    q, free = qname("rate"), qname("rate-free")
    client = ctx.client()
    try:
        await client.set_limits(q, rate=(5, 1.0))
        limits = await client.settings_of(q)
        handles = await client.enqueue_many([on(acc_record, q).call(i) for i in range(15)])
        async with workers(ctx.url, [q, free], n=3, concurrency=10):
            await asyncio.sleep(0.3)
            t0 = time.monotonic()
            free_handles = await client.enqueue_many([on(acc_record, free).call(i) for i in range(10)])
            for h in free_handles:
                await h.result(timeout=5)
            free_took = time.monotonic() - t0
            for h in handles:
                await h.result(timeout=10)
        jobs = [await client.get_job(q, h.id) for h in handles]
    finally:
        await client.close()
    starts = sorted(j.started_at.timestamp() for j in jobs if j.started_at)
    assert len(starts) == 15, "missing started_at"
    peak = max_in_window(starts, 1.0 - 0.005)
    span = starts[-1] - starts[0]
    by_worker = Counter(j.worker for j in jobs)
    detail = (
        f"limits {limits}; max starts in any 1 s window {peak}; span {span:.2f} s; "
        f"claims by worker {sorted(by_worker.values())}; the other queue's 10 jobs took {free_took:.2f} s"
    )
    assert peak <= 5, f"rate exceeded: {detail}"
    assert span >= 1.9, f"15 jobs at 5/s must span >= 2 windows: {detail}"
    assert free_took < 1.0, f"the unlimited queue was held up: {detail}"
    return detail


@check("RetryAfter: come back later without spending an attempt (retries=0, 3 x 429)")
async def check_retry_after(ctx: Ctx) -> str:
    q = qname("retry-after")
    client = ctx.client()
    try:
        async with workers(ctx.url, [q]):
            h = await client.enqueue(on(acc_retry_after, q), 3, 0.3)
            result = await h.result(timeout=10)
        job = await client.get_job(q, h.id)
    finally:
        await client.close()
    runs = REC[h.id]
    gaps = [round(b[0] - a[0], 2) for a, b in itertools.pairwise(runs)]
    detail = (
        f"runs (attempt, retries_left) {[(a, r) for _, a, r in runs]}, gaps {gaps}, "
        f"job.attempts {job.attempts}"
    )
    assert result == "done" and job.state is JobState.COMPLETED, detail
    assert len(runs) == 4, detail
    assert all(g >= 0.28 for g in gaps), f"retried before the delay: {detail}"
    assert all(a == 1 for _, a, _ in runs), f"RetryAfter counted as attempts: {detail}"
    return detail


@check("per-group concurrency limit (2 per group, 3 workers): other groups not blocked")
async def check_group_concurrency(ctx: Ctx) -> str:
    q = qname("group-conc")
    client = ctx.client()
    try:
        await client.set_limits(q, group_concurrency=2)
        calls = [on(acc_busy, q, group="A").call("A", 0.3) for _ in range(8)]
        calls += [on(acc_busy, q, group="B").call("B", 0.3) for _ in range(4)]
        calls += [on(acc_busy, q).call(None, 0.3) for _ in range(4)]
        handles = await client.enqueue_many(calls)
        t0 = time.monotonic()
        async with workers(ctx.url, [q], n=3, concurrency=10):
            for h in handles:
                await h.result(timeout=15)
        took = time.monotonic() - t0
    finally:
        await client.close()
    peaks = {g: PEAK[(q, g)] for g in ("A", "B")}
    total_peak = PEAK[(q, ALL)]
    b_done = [at for g, at in REC[q] if g == "B"]
    a_starts = sorted(at for g, at in REC[q] if g == "A")
    detail = f"peak active per group {peaks}, overall peak {total_peak}, took {took:.2f} s"
    assert peaks["A"] <= 2 and peaks["B"] <= 2, f"group limit exceeded: {detail}"
    assert peaks["A"] == 2, f"group A never had 2 running: {detail}"
    assert total_peak >= 5, f"other groups / ungrouped jobs were held up: {detail}"
    assert max(b_done) < a_starts[-1], f"group B waited for group A: {detail}"
    return detail


@check("per-group rate limit (2 per 1 s per group, 3 workers): other groups not blocked")
async def check_group_rate(ctx: Ctx) -> str:
    q = qname("group-rate")
    client = ctx.client()
    try:
        await client.set_limits(q, group_rate=(2, 1.0))
        calls = [on(acc_record, q, group="A").call(f"A{i}") for i in range(6)]
        calls += [on(acc_record, q, group="B").call(f"B{i}") for i in range(2)]
        handles = await client.enqueue_many(calls)
        async with workers(ctx.url, [q], n=3, concurrency=10):
            for h in handles:
                await h.result(timeout=10)
        jobs = [await client.get_job(q, h.id) for h in handles]
    finally:
        await client.close()
    starts: dict[str, list[float]] = defaultdict(list)
    for j in jobs:
        assert j.started_at is not None
        starts[j.group or "-"].append(j.started_at.timestamp())
    first = min(min(v) for v in starts.values())
    peaks = {g: max_in_window(v, 1.0 - 0.005) for g, v in starts.items()}
    rel = {g: sorted(round(t - first, 2) for t in v) for g, v in starts.items()}
    detail = f"starts (s) {rel}; max per 1 s window {peaks}"
    assert peaks["A"] <= 2 and peaks["B"] <= 2, f"group rate exceeded: {detail}"
    assert max(rel["A"]) >= 1.9, f"A's 6 jobs at 2/s must span >= 2 windows: {detail}"
    assert max(rel["B"]) < 0.5, f"group B waited behind group A: {detail}"
    return detail


FAIR_Q = qname("fair")


@check("fairness: group 'big' (20,000 jobs, enqueued first) vs 'small' (10)")
async def check_fairness(ctx: Ctx) -> str:
    q = FAIR_Q
    done: list[str] = []

    client = ctx.client()
    try:
        t0 = time.monotonic()
        await client.enqueue_many([on(acc_busy, q, group="big").call("big", 0) for _ in range(20_000)])
        await client.enqueue_many([on(acc_busy, q, group="small").call("small", 0) for _ in range(10)])
        enqueue_took = time.monotonic() - t0
        t1 = time.monotonic()
        async with workers(ctx.url, [q], n=2, concurrency=50):
            finished = await until(lambda: sum(1 for g, _ in REC[q] if g == "small") >= 10, 20, 0.005)
            small_took = time.monotonic() - t1
            done = [g for g, _ in REC[q]]
            drained = await until(lambda: len(REC[q]) >= 20_010, 30, 0.1)
            drain_took = time.monotonic() - t1
    finally:
        await client.close()
    assert finished, f"the small group did not finish in 20 s ({done.count('small')} of 10)"
    last_small = max(i for i, g in enumerate(done) if g == "small")
    big_before = done[:last_small].count("big")
    detail = (
        f"big jobs run before the last small one: {big_before}; "
        f"small group done after {small_took:.2f} s; enqueue 20,010 took {enqueue_took:.2f} s; "
        f"all drained: {drained} in {drain_took:.1f} s"
    )
    assert big_before <= 200, f"the small tenant was starved: {detail}"
    return detail


@check("event stream is capped by length (queue of the fairness check)")
async def check_event_cap(ctx: Ctx) -> str:
    client = ctx.client()
    try:
        events, _ = await client.read_events(FAIR_Q, count=1_000_000)
    finally:
        await client.close()
    ran = len(REC[FAIR_Q])
    produced = 3 * ran  # at least enqueued + active + completed per job
    kinds = Counter(e.kind for e in events)
    detail = f"{len(events)} events kept of >= {produced} produced; kinds kept {dict(kinds)}"
    assert ran >= 20_000, f"fairness queue not drained: {ran} jobs ran"
    assert len(events) < produced, f"not capped: {detail}"
    return detail


@check("cluster-wide concurrency limit (3 across 3 workers of concurrency 10)")
async def check_concurrency(ctx: Ctx) -> str:
    q = qname("conc")
    client = ctx.client()
    try:
        await client.set_limits(q, concurrency=3)
        handles = await client.enqueue_many([on(acc_busy, q).call(None, 0.2) for _ in range(12)])
        t0 = time.monotonic()
        async with workers(ctx.url, [q], n=3, concurrency=10):
            for h in handles:
                await h.result(timeout=10)
        took = time.monotonic() - t0
        jobs = [await client.get_job(q, h.id) for h in handles]
    finally:
        await client.close()
    peak = PEAK[(q, ALL)]
    by_worker = Counter(j.worker for j in jobs)
    detail = f"peak active {peak}, took {took:.2f} s, jobs per worker {sorted(by_worker.values())}"
    assert peak <= 3, f"limit exceeded: {detail}"
    assert peak == 3, f"never reached the limit: {detail}"
    assert took >= 0.75, f"12 x 0.2 s at 3 at a time needs >= 0.8 s: {detail}"
    return detail


@check("priority aging: a low-priority job is not starved by a stream of higher ones")
async def check_aging(ctx: Ctx) -> str:
    q_aged, q_plain = qname("aging"), qname("no-aging")
    client = ctx.client()
    stream_for = 2.5

    async def feed(q: str) -> None:
        await client.enqueue(on(acc_busy, q, priority=0), "low", 0.1)
        for _ in range(3):
            await client.enqueue(on(acc_busy, q, priority=3), "high", 0.1)
        end = time.monotonic() + stream_for
        while time.monotonic() < end:
            await client.enqueue(on(acc_busy, q, priority=3), "high", 0.1)
            await asyncio.sleep(0.1)

    try:
        await client.set_limits(q_aged, priority_aging=0.2)
        t0 = time.monotonic()
        async with workers(ctx.url, [q_aged], concurrency=1), workers(ctx.url, [q_plain], concurrency=1):
            await asyncio.gather(feed(q_aged), feed(q_plain))
            await until(lambda: all(any(g == "low" for g, _ in REC[q]) for q in (q_aged, q_plain)), 10)
    finally:
        await client.close()

    def when_low(q: str) -> tuple[int, int, float | None]:
        order = [g for g, _ in REC[q]]
        at = next((t for g, t in REC[q] if g == "low"), None)
        pos = order.index("low") if "low" in order else -1
        return pos, len(order), None if at is None else round(at - t0, 2)

    aged, plain = when_low(q_aged), when_low(q_plain)
    detail = (
        f"low job started as #{aged[0] + 1} of {aged[1]} after {aged[2]} s with aging 0.2 s; "
        f"without aging #{plain[0] + 1} of {plain[1]} after {plain[2]} s"
    )
    assert aged[2] is not None and aged[2] < stream_for, f"aged job still starved: {detail}"
    assert aged[0] < aged[1] - 3, f"aged job did not overtake newer high-priority jobs: {detail}"
    assert plain[0] == plain[1] - 1, f"control: without aging the low job should run last: {detail}"
    return detail


# --------------------------------------------------------------------------------------
# Uniqueness


@check("dedup while unfinished: DUPLICATE names the first job; after it finished -> CREATED")
async def check_dedup_unfinished(ctx: Ctx) -> str:
    q = qname("dedup")
    client = ctx.client()
    try:
        h1 = await client.enqueue(on(acc_record, q, dedup="account-7"), 1)
        h2 = await client.enqueue(on(acc_record, q, dedup="account-7"), 2)
        i1 = await client.enqueue(on(acc_record, q, job_id=f"{q}-fixed"), 3)
        i2 = await client.enqueue(on(acc_record, q, job_id=f"{q}-fixed"), 4)
        async with workers(ctx.url, [q]):
            assert await h1.result(timeout=5) == 1
            await i1.result(timeout=5)
            h3 = await client.enqueue(on(acc_record, q, dedup="account-7"), 5)
            assert await h3.result(timeout=5) == 5
    finally:
        await client.close()
    detail = (
        f"first {h1.outcome}, second {h2.outcome} (same id: {h2.id == h1.id}); job_id again: {i2.outcome}; "
        f"after completion {h3.outcome}; ran {[v for v, _ in REC[q]]}"
    )
    assert h1.outcome is EnqueueOutcome.CREATED and h1.created, detail
    assert h2.outcome is EnqueueOutcome.DUPLICATE and not h2.created and h2.id == h1.id, detail
    assert i2.outcome is EnqueueOutcome.EXISTED and not i2.created and i2.id == i1.id, detail
    assert h3.outcome is EnqueueOutcome.CREATED and h3.id != h1.id, detail
    assert sorted(v for v, _ in REC[q]) == [1, 3, 5], detail
    return detail


@check("dedup throttle window (1 s): DUPLICATE inside the window even after completion, CREATED after")
async def check_dedup_window(ctx: Ctx) -> str:
    q = qname("throttle")
    client = ctx.client()
    try:
        async with workers(ctx.url, [q]):
            t0 = time.monotonic()
            w1 = await client.enqueue(on(acc_record, q, dedup="daily", dedup_window=1.0), 1)
            await w1.result(timeout=5)
            w2 = await client.enqueue(on(acc_record, q, dedup="daily", dedup_window=1.0), 2)
            inside = time.monotonic() - t0
            await asyncio.sleep(max(0.0, 1.2 - (time.monotonic() - t0)))
            w3 = await client.enqueue(on(acc_record, q, dedup="daily", dedup_window=1.0), 3)
            await w3.result(timeout=5)
    finally:
        await client.close()
    detail = (
        f"{w1.outcome}, then at {inside:.2f} s {w2.outcome} -> {w2.id == w1.id}, after 1.2 s {w3.outcome}"
    )
    assert w1.outcome is EnqueueOutcome.CREATED, detail
    assert w2.outcome is EnqueueOutcome.DUPLICATE and w2.id == w1.id, detail
    assert w3.outcome is EnqueueOutcome.CREATED and w3.id != w1.id, detail
    assert [v for v, _ in REC[q]] == [1, 3], f"ran {REC[q]}"
    return detail


@check("dedup debounce (0.5 s): the latest enqueue replaces the earlier ones; only it runs")
async def check_debounce(ctx: Ctx) -> str:
    q = qname("debounce")
    client = ctx.client()
    try:
        async with workers(ctx.url, [q]):
            hs = []
            for i in (1, 2, 3):
                hs.append(
                    await client.enqueue(on(acc_record, q, dedup="doc-9", dedup_window=0.5, debounce=True), i)
                )
                await asyncio.sleep(0.1)
            result = await hs[-1].result(timeout=5)
            await asyncio.sleep(0.8)
            states = [(await client.get_job(q, h.id)).state.value for h in hs]
    finally:
        await client.close()
    ran = [v for v, _ in REC[q]]
    detail = (
        f"outcomes {[h.outcome.value for h in hs]}, replaced {[h.replaced for h in hs]}, "
        f"states {states}, ran {ran}"
    )
    assert ran == [3] and result == 3, f"only the last should run: {detail}"
    assert hs[1].replaced == hs[0].id and hs[2].replaced == hs[1].id, (
        f"replaced does not name the job: {detail}"
    )
    assert states == ["cancelled", "cancelled", "completed"], detail
    return detail


# --------------------------------------------------------------------------------------
# Control of running jobs


@check("cancel waiting and delayed jobs: cancelled, never run, result() raises JobCancelled")
async def check_cancel(ctx: Ctx) -> str:
    q = qname("cancel")
    client = ctx.client()
    try:
        waiting = await client.enqueue(on(acc_record, q), "waiting")
        delayed = await client.enqueue(on(acc_record, q, delay=0.5), "delayed")
        keep = await client.enqueue(on(acc_record, q), "keep")
        r1 = await client.cancel(q, waiting.id, reason="not needed", by="acceptance")
        r2 = await client.cancel(q, delayed.id, reason="not needed", by="acceptance")
        async with workers(ctx.url, [q]):
            await keep.result(timeout=5)
            await asyncio.sleep(1.0)
        jobs = [await client.get_job(q, h.id) for h in (waiting, delayed)]
        raised = []
        for h in (waiting, delayed):
            try:
                await h.result(timeout=1)
                raised.append("nothing")
            except JobCancelled as exc:
                raised.append(f"JobCancelled({exc})")
    finally:
        await client.close()
    ran = [v for v, _ in REC[q]]
    detail = (
        f"cancel() -> {r1}, {r2}; states {[j.state.value for j in jobs]}; ran {ran}; errors {jobs[0].error}"
    )
    assert (r1, r2) == ("cancelled", "cancelled"), detail
    assert all(j.state is JobState.CANCELLED for j in jobs), detail
    assert ran == ["keep"], detail
    assert all(r.startswith("JobCancelled") for r in raised), f"result(): {raised}"
    return detail


@check("cancel/abort records who and why (waiting job and running job)")
async def check_who_why(ctx: Ctx) -> str:
    q = qname("who-why")
    client = ctx.client()
    try:
        waiting = await client.enqueue(on(acc_record, q, delay=30), 1)
        await client.cancel(q, waiting.id, reason="reason-W", by="who-W")
        async with workers(ctx.url, [q], lease=3):
            running = await client.enqueue(on(acc_async_abortable, q), 30)
            await until(lambda: bool(REC[running.id]), 5)
            await client.cancel(q, running.id, reason="reason-R", by="who-R")
            job_r = await terminal(client, q, running.id, 6)
        job_w = await client.get_job(q, waiting.id)
    finally:
        await client.close()
    detail = f"waiting: {job_w.error}; running: {job_r.error}"
    assert job_w.state is JobState.CANCELLED and job_r.state is JobState.CANCELLED, detail
    for job, who, why in ((job_w, "who-W", "reason-W"), (job_r, "who-R", "reason-R")):
        values = " ".join(str(v) for v in (job.error or {}).values())
        assert who in values and why in values, f"{job.id} lost who/why given to cancel(): {detail}"
    return detail


@check("abort a running async job (library): CancelledError inside, state cancelled")
async def check_abort_async(ctx: Ctx) -> str:
    q = qname("abort-async")
    client = ctx.client()
    try:
        async with workers(ctx.url, [q], lease=3):
            h = await client.enqueue(on(acc_async_abortable, q), 30)
            assert await until(lambda: bool(REC[h.id]), 5), "job did not start"
            t0 = time.monotonic()
            answer = await client.cancel(q, h.id, reason="user pressed stop", by="acceptance")
            job = await terminal(client, q, h.id, 8)
            took = time.monotonic() - t0
            try:
                await h.result(timeout=1)
                raised = "nothing"
            except JobCancelled as exc:
                raised = f"JobCancelled({exc})"
    finally:
        await client.close()
    seen = [what for what, _ in REC[h.id]]
    detail = f"cancel() -> {answer}; {job.state.value} after {took:.2f} s; task saw {seen}; result() {raised}"
    assert answer == "aborting", detail
    assert job.state is JobState.CANCELLED, detail
    assert "CancelledError" in seen, detail
    assert took < 3.0, f"not within a third of the 3 s lease (+margin): {detail}"
    assert raised.startswith("JobCancelled"), detail
    return detail


@check("abort a running sync job from another process (conveyor cancel): flag seen, cancelled")
async def check_abort_sync(ctx: Ctx) -> str:
    q = qname("abort-sync")
    client = ctx.client()
    try:
        async with workers(ctx.url, [q], lease=3):
            h = await client.enqueue(on(acc_sync_abortable, q), 20)
            assert await until(lambda: bool(REC[h.id]), 5), "job did not start"
            t0 = time.monotonic()
            out = await cli(ctx.url, "cancel", h.id, "-q", q, "--reason", "stop from the CLI")
            job = await terminal(client, q, h.id, 8)
            took = time.monotonic() - t0
    finally:
        await client.close()
    seen = [what for what, _ in REC[h.id]]
    detail = (
        f"CLI rc={out.returncode} {out.stdout.strip()!r}; {job.state.value} after {took:.2f} s; "
        f"saw {seen}; {job.error}"
    )
    assert out.returncode == 0, f"{detail} {out.stderr}"
    assert "flag seen" in seen, detail
    assert "raise_if_cancelled did not raise" not in seen, detail
    assert job.state is JobState.CANCELLED, detail
    assert took < 4.0, detail
    return detail


@check("isolation='process': abort and hard timeout kill the child process; worker goes on")
async def check_abort_process(ctx: Ctx) -> str:
    q = qname("abort-proc")
    client = ctx.client()
    pid_abort, pid_timeout = ctx.tmp / "abort.pid", ctx.tmp / "timeout.pid"
    try:
        async with workers(ctx.url, [q], registry=app.tasks, lease=3):
            # a first isolated job also starts the fork server (slow under load)
            warm_pid = await (await client.enqueue(on(app.hang, q), str(ctx.tmp / "warm.pid"), 0)).result(15)
            h = await client.enqueue(on(app.hang, q), str(pid_abort), 30)
            ht = await client.enqueue(on(app.hang_past_timeout, q), str(pid_timeout), 30)
            if not await until(pid_abort.exists, 10):
                states = [(await client.get_job(q, x.id)) for x in (h, ht)]
                raise AssertionError(
                    "the child did not write its pid in 10 s: "
                    + "; ".join(f"{j.task} {j.state.value} {j.error}" for j in states)
                    + f"; pid files: abort {read_pid(pid_abort)}, timeout {read_pid(pid_timeout)}"
                    + f"; processes under this one: {process_tree()}"
                )
            t0 = time.monotonic()
            answer = await client.cancel(q, h.id, reason="kill it", by="acceptance")
            job = await terminal(client, q, h.id, 8)
            took = time.monotonic() - t0
            job_t = await terminal(client, q, ht.id, 8)
            await asyncio.sleep(0.5)
            pids = [int(p.read_text()) for p in (pid_abort, pid_timeout) if p.exists()]
            alive = {pid: pid_alive(pid) for pid in pids}
            after = await client.enqueue(on(app.hang, q), str(ctx.tmp / "after.pid"), 0.05)
            after_pid = await after.result(timeout=10)
    finally:
        await client.close()
    detail = (
        f"cancel() -> {answer}; aborted job {job.state.value} after {took:.2f} s ({job.error}); "
        f"timeout job {job_t.state.value} ({job_t.error}; its child "
        f"{'started' if pid_timeout.exists() else 'had not started'}); child alive {alive}; "
        f"jobs ran in pids {warm_pid}, {after_pid} (worker {os.getpid()})"
    )
    assert answer == "aborting", detail
    assert job.state is JobState.CANCELLED, detail
    assert took < 3.0, detail
    assert job_t.state is JobState.FAILED and (job_t.error or {}).get("reason") == "timeout", detail
    assert not any(alive.values()), f"a child process survived: {detail}"
    assert os.getpid() not in (warm_pid, after_pid) and after_pid not in pids, detail
    return detail


@check("progress and log lines readable while the job runs; both bounded")
async def check_progress(ctx: Ctx) -> str:
    q = qname("progress")
    client = ctx.client()
    try:
        async with workers(ctx.url, [q]):
            h = await client.enqueue(on(acc_progress, q), 1100)
            await asyncio.wait_for(gate(f"{h.id}:reached").wait(), 10)
            seen: dict[str, Any] = {}

            async def visible() -> bool:
                job = await client.get_job(q, h.id)
                logs = await client.job_logs(q, h.id)
                seen.update(state=job.state, progress=job.progress, logs=logs)
                return bool(logs) and logs[-1] == "line 1099" and job.progress is not None

            await until(visible, 5)
            gate(f"{h.id}:release").set()
            assert await h.result(timeout=5) == "ok"
            final = await client.get_job(q, h.id)
    finally:
        await client.close()
    logs = seen["logs"]
    big = "x" * 20_000
    detail = (
        f"while {seen['state'].value}: progress {str(seen['progress'])[:60]!r}, {len(logs)} log lines "
        f"({logs[0]!r}..{logs[-1]!r}); {REC[h.id]}; final progress {final.progress}"
    )
    assert seen["state"] is JobState.ACTIVE, detail
    assert seen["progress"] == {"step": 1, "of": 3}, f"progress while running: {detail}"
    assert len(logs) == 1000 and logs[0] == "line 100" and logs[-1] == "line 1099", f"log cap: {detail}"
    assert seen["progress"] != {"blob": big}, f"20 KB progress stored: {detail}"
    assert final.progress == 100, detail
    return detail


# --------------------------------------------------------------------------------------
# Composition


@check("flow: parent waits in waiting_children, reads children's results; children on another queue")
async def check_flow(ctx: Ctx) -> str:
    qp, qc = qname("flow-parent"), qname("flow-children")
    client = ctx.client()
    try:
        flow = await client.enqueue_flow(
            Flow(on(acc_parent_sum, qp).call(), [on(acc_double, qc).call(i) for i in (1, 2, 3, 4)])
        )
        passing = await client.enqueue_flow(
            Flow(
                on(acc_parent_args, qp).call("L"),
                [on(acc_double, qc).call(i) for i in (5, 6)],
                pass_results=True,
            )
        )
        before = (await flow.job.fetch()).state
        children_before = [(await c.fetch()).state.value for c in flow.children]
        async with workers(ctx.url, [qc]), workers(ctx.url, [qp]):
            result = await flow.job.result(timeout=10)
            passed = await passing.job.result(timeout=10)
    finally:
        await client.close()
    detail = (
        f"parent {before.value} while children {children_before}; parent read {result}; "
        f"pass_results -> {passed}"
    )
    assert before is JobState.WAITING_CHILDREN, detail
    assert [c.queue for c in flow.children] == [qc] * 4, detail
    assert result == {"sum": 20, "queues": [qc], "states": ["completed"] * 4, "results": [2, 4, 6, 8]}, detail
    assert passed == {"results": [10, 12], "label": "L"}, detail
    return detail


@check("chain a -> b -> c: each step receives the previous result")
async def check_chain(ctx: Ctx) -> str:
    q = qname("chain")
    client = ctx.client()
    try:
        flow = await client.enqueue_flow(
            chain(on(acc_add_one, q).call(1), on(acc_times_ten, q).call(), on(acc_minus, q).call(3))
        )
        async with workers(ctx.url, [q], n=2):
            result = await flow.job.result(timeout=10)
    finally:
        await client.close()
    steps = REC[q]
    detail = f"steps {steps}; result {result}"
    assert steps == [("add_one", 1), ("times_ten", 2), ("minus", 20)], detail
    assert result == 17, detail
    return detail


@check("chord: a group in parallel, then a callback with all results in order")
async def check_chord(ctx: Ctx) -> str:
    q = qname("chord")
    client = ctx.client()
    try:
        flow = await client.enqueue_flow(
            chord([on(acc_square, q).call(n) for n in range(8)], on(acc_collect, q).call())
        )
        async with workers(ctx.url, [q], n=2):
            result = await flow.job.result(timeout=10)
    finally:
        await client.close()
    assert result == [n * n for n in range(8)], f"callback got {result}"
    return f"callback got {result}"


@check("failed child: 'fail' fails the parent (child_failed, also up a chain); 'ignore' runs it")
async def check_flow_failure(ctx: Ctx) -> str:
    q = qname("flow-fail")
    client = ctx.client()
    try:
        failing = await client.enqueue_flow(
            Flow(on(acc_parent_outcomes, q).call(), [on(acc_double, q).call(1), on(acc_boom, q).call()])
        )
        ignoring = await client.enqueue_flow(
            Flow(
                on(acc_parent_outcomes, q).call(),
                [on(acc_double, q).call(1), on(acc_boom, q).call()],
                on_child_failure="ignore",
            )
        )
        broken = await client.enqueue_flow(
            chain(on(acc_boom, q).call(), on(acc_times_ten, q).call(), on(acc_minus, q).call(1))
        )
        async with workers(ctx.url, [q]):
            fail_job = await terminal(client, q, failing.job.id, 10)
            outcomes = await ignoring.job.result(timeout=10)
            chain_job = await terminal(client, q, broken.job.id, 10)
    finally:
        await client.close()
    detail = (
        f"fail: {fail_job.state.value} {fail_job.error}; ignore: parent saw {outcomes}; "
        f"chain end: {chain_job.state.value} {chain_job.error}"
    )
    assert fail_job.state is JobState.FAILED and (fail_job.error or {}).get("reason") == "child_failed", (
        detail
    )
    assert not REC[failing.job.id], f"parent ran despite 'fail': {detail}"
    assert [o["state"] for o in outcomes] == ["completed", "failed"], detail
    assert outcomes[0]["result"] == 2 and outcomes[1]["error"] == "ValueError", detail
    assert chain_job.state is JobState.FAILED and (chain_job.error or {}).get("reason") == "child_failed", (
        detail
    )
    assert not [s for s in REC[q] if s[0] in ("times_ten", "minus")], f"later chain steps ran: {detail}"
    return detail


@check("bulk enqueue_flows: 50 flows (children on another queue) in one call")
async def check_enqueue_flows(ctx: Ctx) -> str:
    qp, qc = qname("bulk-parent"), qname("bulk-children")
    client = ctx.client()
    try:
        t0 = time.monotonic()
        handles = await client.enqueue_flows(
            Flow(on(acc_parent_sum, qp).call(), [on(acc_double, qc).call(i), on(acc_double, qc).call(i + 1)])
            for i in range(50)
        )
        took = time.monotonic() - t0
        async with workers(ctx.url, [qp, qc], n=2, concurrency=50):
            results = [await h.job.result(timeout=15) for h in handles]
    finally:
        await client.close()
    sums = [r["sum"] for r in results]
    assert len(handles) == 50 and all(len(h.children) == 2 for h in handles), "handles"
    assert sums == [2 * (2 * i + 1) for i in range(50)], f"sums {sums}"
    return f"50 flows / 150 jobs enqueued in {took * 1000:.0f} ms; every parent got its children's sum"


# --------------------------------------------------------------------------------------
# Events and waiting for results


@check("event stream kinds for each job's life; small fields only; live events() follows")
async def check_events(ctx: Ctx) -> str:
    q = qname("events")
    client = ctx.client()
    follower = ctx.client()
    live: list[tuple[str, str]] = []

    async def follow() -> None:
        async for ev in follower.events(q, after="0-0"):
            live.append((ev.job_id, ev.kind))

    following = asyncio.create_task(follow())
    try:
        async with workers(ctx.url, [q], lease=3):
            ok = await client.enqueue(on(acc_event_job, q), 20_000)
            bad = await client.enqueue(on(acc_boom, q))
            cancelled = await client.enqueue(on(acc_record, q, delay=30), 1)
            await client.cancel(q, cancelled.id)
            aborted = await client.enqueue(on(acc_async_abortable, q), 30)
            assert len(await ok.result(timeout=10)) == 20_000
            await terminal(client, q, bad.id, 5)
            await until(lambda: bool(REC[aborted.id]), 5)
            await client.cancel(q, aborted.id)
            await terminal(client, q, aborted.id, 6)
            await asyncio.sleep(0.3)
        events, _ = await client.read_events(q)
    finally:
        following.cancel()
        await client.close()
        await follower.close()
    per_job: dict[str, list[str]] = defaultdict(list)
    for ev in events:
        per_job[ev.job_id].append(ev.kind)
    largest = max(sum(len(k) + len(str(v)) for k, v in ev.fields.items()) for ev in events)
    expected = {
        ok.id: ["enqueued", "active", "progress", "retrying", "active", "progress", "completed"],
        bad.id: ["enqueued", "active", "failed"],
        cancelled.id: ["enqueued", "cancelled"],
        aborted.id: ["enqueued", "active", "aborting", "cancelled"],
    }
    names = {ok.id: "ok", bad.id: "failing", cancelled.id: "cancelled", aborted.id: "aborted"}
    got = {names[j]: per_job[j] for j in expected}
    detail = f"{got}; largest fields {largest} chars; live events() got {len(live)} of {len(events)}"
    for job_id, kinds in expected.items():
        assert per_job[job_id] == kinds, f"{names[job_id]}: {per_job[job_id]} != {kinds}; {detail}"
    assert largest < 500, f"an event carries a big payload: {detail}"
    assert [k for j, k in live if j == ok.id] == expected[ok.id], f"events(): {detail}"
    return detail


@check("stalled: SIGKILL a `conveyor worker` process mid-job; another worker re-delivers it")
async def check_stalled(ctx: Ctx) -> str:
    q = qname("stalled")
    marker = ctx.tmp / "stalled.marker"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "conveyor", "worker", "app:tasks", "-Q", q, "--url", ctx.url]
    command += ["--lease", "1", "--sweep-interval", "0.5", "--log-level", "warning"]
    proc = await asyncio.create_subprocess_exec(
        *command, cwd=HERE, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    client = ctx.client()
    try:
        h = await client.enqueue(on(app.slow_once, q), str(marker), 30)
        started = await until(marker.exists, 15)
        assert started, f"the subprocess worker did not start the job (exit code {proc.returncode})"
        job = await client.get_job(q, h.id)
        proc.kill()
        await asyncio.wait_for(proc.wait(), 5)
        t0 = time.monotonic()
        async with workers(ctx.url, [q], registry=app.tasks, lease=2, sweep_interval=0.5):
            result = await h.result(timeout=15)
            took = time.monotonic() - t0
        events, _ = await client.read_events(q)
        final = await client.get_job(q, h.id)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await client.close()
    kinds = [e.kind for e in events if e.job_id == h.id]
    detail = (
        f"first holder {job.worker} (pid {proc.pid}); re-delivered and {result!r} "
        f"{took:.2f} s after SIGKILL; "
        f"events {kinds}; crashes {final.crashes}"
    )
    assert job.state is JobState.ACTIVE, detail
    assert result == "recovered", detail
    assert kinds == ["enqueued", "active", "stalled", "active", "completed"], detail
    return detail


@check("result waiting: sync and async, JobFailed, ResultTimeout, no polling delay")
async def check_results(ctx: Ctx) -> str:
    q = qname("results")
    client = ctx.client()
    sync_client = Client.from_url(ctx.url)
    try:
        async with workers(ctx.url, [q]):
            h = await client.enqueue(on(acc_value_after, q), 41, 0.3)
            value = await h.result(timeout=5)
            lag_async = time.monotonic() - REC[f"end:{h.id}"][0]

            def sync_part() -> tuple[int, float, str]:
                sh = sync_client.enqueue(on(acc_value_after, q), 42, 0.3)
                v = sh.result(timeout=5)
                lag = time.monotonic() - REC[f"end:{sh.id}"][0]
                bad = sync_client.enqueue(on(acc_boom, q))
                try:
                    bad.result(timeout=5)
                    failed = "nothing"
                except JobFailed as exc:
                    failed = f"JobFailed: {exc}"
                return v, lag, failed

            svalue, lag_sync, sync_failed = await asyncio.to_thread(sync_part)
            bad = await client.enqueue(on(acc_boom, q))
            try:
                await bad.result(timeout=5)
                async_failed = "nothing"
            except JobFailed as exc:
                async_failed = f"JobFailed: {exc}"
            never = await client.enqueue(on(acc_record, q, delay=60), 0)
            t0 = time.monotonic()
            try:
                await never.result(timeout=0.5)
                timed_out = "nothing"
            except ResultTimeout:
                timed_out = "ResultTimeout"
            waited = time.monotonic() - t0
    finally:
        await client.close()
        sync_client.close()
    detail = (
        f"async {value} (+{lag_async * 1000:.0f} ms after the task returned), sync {svalue} "
        f"(+{lag_sync * 1000:.0f} ms); {async_failed!r}; sync {sync_failed!r}; "
        f"timeout 0.5 -> {timed_out} after {waited:.2f} s"
    )
    assert (value, svalue) == (41, 42), detail
    assert lag_async < 0.5 and lag_sync < 0.5, f"slow wake-up: {detail}"
    assert async_failed.startswith("JobFailed") and sync_failed.startswith("JobFailed"), detail
    assert timed_out == "ResultTimeout" and 0.4 <= waited < 2.0, detail
    return detail


class RecordingHooks(Hooks):
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def before_job(self, job: Any) -> None:
        self.calls.append(("before", job.task, f"attempt {job.attempt}"))

    def after_job(self, job: Any, result: Any) -> None:
        self.calls.append(("after", job.task, repr(result)))

    def on_failure(self, job: Any, error: BaseException) -> None:
        self.calls.append(("failure", job.task, type(error).__name__))

    def on_retry(self, job: Any, error: BaseException, delay: float) -> None:
        self.calls.append(("retry", job.task, f"{type(error).__name__} in {delay:.2f}"))


@check("worker hooks: before/after each job, on_retry, on_failure")
async def check_hooks(ctx: Ctx) -> str:
    q = qname("hooks")
    hooks = RecordingHooks()
    client = ctx.client()
    try:
        async with workers(ctx.url, [q], hooks=(hooks,), concurrency=1):
            for task in (acc_record, acc_flaky, acc_boom):
                h = await (
                    client.enqueue(on(task, q), "v") if task is acc_record else client.enqueue(on(task, q))
                )
                await terminal(client, q, h.id, 5)
            await until(lambda: len(hooks.calls) >= 7, 2)
    finally:
        await client.close()
    expected = [
        ("before", "acc_record", "attempt 1"),
        ("after", "acc_record", "'v'"),
        ("before", "acc_flaky", "attempt 1"),
        ("retry", "acc_flaky", "RuntimeError in 0.05"),
        ("before", "acc_flaky", "attempt 2"),
        ("after", "acc_flaky", "'second attempt'"),
        ("before", "acc_boom", "attempt 1"),
        ("failure", "acc_boom", "ValueError"),
    ]
    assert hooks.calls == expected, f"hooks called: {hooks.calls}"
    return f"{len(hooks.calls)} hook calls in the expected order"


@check("eager test client: tasks run at enqueue, in-process, without Redis")
async def check_eager(ctx: Ctx) -> str:
    def run() -> str:
        eager = EagerClient(tasks)
        h = eager.enqueue(acc_add, 2, 3)
        assert h.created and h.result() == 5, "sync task"
        hp = eager.enqueue(acc_eager_progress, 3)
        assert hp.result() == 3, "async task"
        many = eager.enqueue_many([acc_add.call(i, i) for i in range(3)])
        assert [m.result() for m in many] == [0, 2, 4]
        hb = eager.enqueue(acc_boom)
        try:
            hb.result()
            failed = "nothing"
        except JobFailed:
            failed = "JobFailed"
        jobs = eager.jobs
        job = jobs[1]
        assert [j.task for j in jobs[:2]] == ["acc_add", "acc_eager_progress"], [j.task for j in jobs]
        assert job.progress == {"done": 3, "of": 3} and job.logs == ["step 1", "step 2", "step 3"], job
        assert failed == "JobFailed" and jobs[-1].state is JobState.FAILED, (failed, jobs[-1])
        return f"{len(jobs)} eager jobs; progress {job.progress}, logs {job.logs}; failure -> {failed}"

    return await asyncio.to_thread(run)


# --------------------------------------------------------------------------------------


@dataclass
class Outcome:
    name: str
    ok: bool
    detail: str
    seconds: float


async def run_check(name: str, fn: Callable[[Ctx], Awaitable[str]], ctx: Ctx, timeout: float) -> Outcome:
    t0 = time.monotonic()
    try:
        detail = await asyncio.wait_for(fn(ctx), timeout)
        ok = True
    except AssertionError as exc:
        ok, detail = False, str(exc) or traceback.format_exc(limit=-1)
    except Exception as exc:
        ok, detail = (
            False,
            f"{type(exc).__name__}: {exc} @ {traceback.format_exc(limit=-2).splitlines()[-3:]}",
        )
    return Outcome(name, ok, detail, time.monotonic() - t0)


async def main_async(url: str, only: str | None) -> list[Outcome]:
    def wanted(name: str) -> bool:
        return only is None or any(part.lower() in name.lower() for part in only.split(","))

    with tempfile.TemporaryDirectory(prefix="conveyor-acceptance-") as tmp:
        ctx = Ctx(url=url, tmp=Path(tmp))
        outcomes: list[Outcome] = []
        cron = CronCheck(ctx) if wanted(CronCheck.name) else None
        if cron is not None:
            await cron.start()
        # the fairness check runs alone (20,010 jobs), then reads its queue's event stream
        alone = [
            (n, f) for n, f in CHECKS if n.startswith(("fairness", "event stream is capped")) and wanted(n)
        ]
        for name, fn in alone:
            outcomes.append(await run_check(name, fn, ctx, 45))
        rest = [(n, f) for n, f in CHECKS if (n, f) not in alone and wanted(n)]
        outcomes += await asyncio.gather(*(run_check(n, f, ctx, 40) for n, f in rest))
        if cron is not None:

            async def cron_finish(_: Ctx) -> str:
                return await cron.finish()

            outcomes.insert(0, await run_check(cron.name, cron_finish, ctx, 75))
        return outcomes


def report(outcomes: list[Outcome], total: float, url: str) -> None:
    table = Table(
        title=f"Conveyor issue 3 acceptance -- {url.split('@')[-1]} -- {total:.1f} s", show_lines=True
    )
    table.add_column("check", max_width=48)
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    table.add_column("s", justify="right")
    for o in outcomes:
        table.add_row(o.name, "[green]PASS" if o.ok else "[red]FAIL", o.detail, f"{o.seconds:.1f}")
    console = Console(width=200)
    console.print(table)
    failed = [o for o in outcomes if not o.ok]
    console.print(f"{len(outcomes) - len(failed)} passed, {len(failed)} failed, {total:.1f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a Redis to use (default: start a private server)")
    parser.add_argument(
        "--only", help="run only the checks whose name contains one of these comma-separated texts"
    )
    args = parser.parse_args()
    t0 = time.monotonic()
    server = None
    url = args.url
    if url is None:
        server = RedisServer(appendonly=False).start()
        url = server.url
    try:
        outcomes = asyncio.run(main_async(url, args.only))
    finally:
        if server is not None:
            server.stop()
    report(outcomes, time.monotonic() - t0, url)
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())

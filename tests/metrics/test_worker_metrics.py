"""A worker's own metrics (``--metrics-port``): what it counts, the text it serves, /livez, and
the sum a supervisor serves for ``--processes N``. Real Redis, real HTTP, no mocks.

The text format is checked by parsing it back with a strict parser written here (promtool is
not installed, and neither is prometheus_client): every line is HELP, TYPE or a sample of the
family declared just before, names and labels well formed, histograms cumulative and ending in
``+Inf`` equal to ``_count``.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor import AsyncClient, Client, JobState, Tasks, Worker, ops
from conveyor.metrics.buckets import BOUNDS_SECONDS
from conveyor.metrics.http import MetricsServer, PortUnavailable
from conveyor.metrics.processes import ProcessesMetrics, write_snapshot
from conveyor.metrics.worker import Snapshot

from helpers import running_worker, wait_until

ROOT = Path(__file__).resolve().parents[2]

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


# ---------------------------------------------------------------------- a strict parser
_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')
_SUFFIXES = {"counter": ("",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}


def parse(text: str) -> tuple[dict[str, str], Series]:
    """``({family: type}, {(sample name, labels): value})``; raises AssertionError on anything
    the Prometheus text format (0.0.4) does not allow, or that our families should not do."""
    assert text.endswith("\n"), "the last line ends with a newline"
    types: dict[str, str] = {}
    helped: set[str] = set()
    series: Series = {}
    family: str | None = None
    for number, line in enumerate(text[:-1].split("\n"), 1):
        where = f"line {number}: {line!r}"
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert re.fullmatch(_NAME, name) and name not in helped, where
            helped.add(name)
            family = None
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name in helped and name not in types, f"{where}: HELP first, one TYPE per family"
            assert kind in _SUFFIXES, where
            types[name] = kind
            family = name
            continue
        assert not line.startswith("#") and line.strip(), f"{where}: no other comments, no blank lines"
        match = _SAMPLE.match(line)
        assert match and family is not None, f"{where}: a sample of the family declared above"
        sample, label_text, value_text = match.groups()
        # As Prometheus's own parser (expfmt) reads 0.0.4: a counter's or gauge's samples bear
        # the name HELP and TYPE gave (a counter's ends in _total), a histogram's add a suffix.
        assert sample in {family + suffix for suffix in _SUFFIXES[types[family]]}, (
            f"{where}: not a sample of {family}"
        )
        if types[family] == "counter":
            assert family.endswith("_total"), f"{where}: a counter's name ends in _total"
        labels: list[tuple[str, str]] = []
        rest = label_text or ""
        while rest:
            label = _LABEL.match(rest)
            assert label, f"{where}: malformed labels"
            value = label.group(2).replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
            labels.append((label.group(1), value))
            rest = rest[label.end() :]
        names = [name for name, _ in labels]
        assert len(set(names)) == len(names), f"{where}: a label twice"
        value = float(value_text)  # +Inf, NaN included
        key = (sample, tuple(labels))
        assert key not in series, f"{where}: the same series twice"
        series[key] = value
    for name, kind in types.items():
        if kind == "histogram":
            _check_histograms(name, series)
    return types, series


def _check_histograms(name: str, series: Series) -> None:
    groups: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
    for (sample, labels), value in series.items():
        if sample == name + "_bucket":
            assert labels[-1][0] == "le", "le is the last label"
            groups.setdefault(labels[:-1], []).append((float(labels[-1][1]), value))
    assert groups, f"{name}: no buckets"
    for labels, buckets in groups.items():
        bounds = [bound for bound, _ in buckets]
        assert bounds == [*BOUNDS_SECONDS, math.inf], f"{name}{labels}: the shared bounds, in order"
        counts = [count for _, count in buckets]
        assert counts == sorted(counts), f"{name}{labels}: cumulative"
        assert counts[-1] == series[name + "_count", labels], f"{name}{labels}: +Inf is the count"
        assert (name + "_sum", labels) in series


def lint(text: str) -> None:
    """promtool's own lint too, where it is installed (Debian's prometheus package)."""
    promtool = shutil.which("promtool")
    if promtool is not None:
        checked = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
        )
        assert checked.returncode == 0 and not checked.stdout.strip(), checked.stdout + checked.stderr


def value(series: Series, sample: str, **labels: str) -> float:
    found = maybe(series, sample, **labels)
    assert found is not None, f"no sample {sample}{labels}"
    return found


def maybe(series: Series, sample: str, **labels: str) -> float | None:
    for (name, found), number in series.items():
        if name == sample and dict(found) == labels:
            return number
    return None


# ---------------------------------------------------------------------- helpers
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(port: int) -> tuple[dict[str, str], Series]:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse(response.text)


async def ascrape(port: int) -> Series:
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200
    return parse(response.text)[1]


WORKER_FAMILIES = {
    "conveyor_worker_jobs_started_total": "counter",
    "conveyor_worker_jobs_completed_total": "counter",
    "conveyor_worker_jobs_failed_total": "counter",
    "conveyor_worker_jobs_retried_total": "counter",
    "conveyor_worker_jobs_cancelled_total": "counter",
    "conveyor_worker_job_run_seconds": "histogram",
    "conveyor_worker_jobs_in_flight": "gauge",
    "conveyor_worker_concurrency": "gauge",
    "conveyor_worker_lease_renewals_total": "counter",
    "conveyor_worker_leases_lost_total": "counter",
    "conveyor_worker_stale_acks_total": "counter",
    "conveyor_worker_redis_round_trip_seconds": "histogram",
    "conveyor_worker_event_loop_lag_seconds": "gauge",
    "conveyor_worker_threads_busy": "gauge",
    "conveyor_worker_threads_max": "gauge",
    "conveyor_worker_heartbeat_age_seconds": "gauge",
    "conveyor_worker_up": "gauge",
}
"""The spec's list for one worker process: names and types."""


# ---------------------------------------------------------------------- one process
async def test_a_worker_counts_each_outcome_and_serves_them(
    aclient: AsyncClient, tasks: Tasks, url: str, queue: str
) -> None:
    running = asyncio.Event()
    attempts: list[int] = []

    @tasks.task
    async def fine(n: int) -> int:
        return n

    @tasks.task
    def fine_in_thread(n: int) -> int:
        return n

    @tasks.task(retries=0)
    async def broken() -> None:
        raise ValueError("for good")

    @tasks.task(retries=1, backoff=0)
    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("once")
        return "second time"

    @tasks.task
    async def endless() -> None:
        running.set()
        await asyncio.sleep(60)

    await aclient.run(ops.enqueue(aclient.keys(queue), [ops.NewJob("unknown", "no_such_task", b"[]")]))
    async with running_worker(tasks, url, metrics_port=0, lease=1.5) as worker:
        await wait_until(lambda: worker.metrics_address is not None)
        assert worker.metrics_address is not None
        port = worker.metrics_address[1]
        done = [await aclient.enqueue(fine, n) for n in range(5)]
        done += [await aclient.enqueue(fine_in_thread, n) for n in range(3)]
        dead = await aclient.enqueue(broken)
        retried = await aclient.enqueue(flaky)
        cancelled = await aclient.enqueue(endless)
        await asyncio.wait_for(running.wait(), 5)
        assert await aclient.cancel(queue, cancelled.id) == "aborting"
        for handle in done:
            await handle.result(timeout=5)
        assert await retried.result(timeout=5) == "second time"
        for ended, state in ((dead, JobState.FAILED), (cancelled, JobState.CANCELLED)):
            await wait_until(lambda h=ended, s=state: _state_is(aclient, queue, h.id, s))

        async def counted() -> bool:
            series = await ascrape(port)
            return maybe(series, "conveyor_worker_jobs_cancelled_total", queue=queue, task="endless") == 1

        await wait_until(counted)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            text = (await http.get("/metrics")).text
            livez = await http.get("/livez")
        types, series = parse(text)
        lint(text)

    assert types == WORKER_FAMILIES
    expected = {  # task: started, completed, failed, retried, cancelled
        "fine": (5, 5, 0, 0, 0),
        "fine_in_thread": (3, 3, 0, 0, 0),
        "broken": (1, 0, 1, 0, 0),
        "flaky": (2, 1, 0, 1, 0),
        "endless": (1, 0, 0, 0, 1),
        "no_such_task": (0, 0, 1, 0, 0),  # never started: it cannot run here
    }
    outcomes = ("started", "completed", "failed", "retried", "cancelled")
    for task, figures in expected.items():
        found = tuple(
            value(series, f"conveyor_worker_jobs_{o}_total", queue=queue, task=task) for o in outcomes
        )
        assert found == figures, task
        runs = value(series, "conveyor_worker_job_run_seconds_count", queue=queue, task=task)
        assert runs == figures[0], f"{task}: one run observed per start"
    assert value(series, "conveyor_worker_job_run_seconds_bucket", queue=queue, task="endless", le="0.1") == 0
    assert value(series, "conveyor_worker_jobs_in_flight", queue=queue) == 0
    assert value(series, "conveyor_worker_threads_busy") == 0
    assert value(series, "conveyor_worker_threads_max") == 64
    assert value(series, "conveyor_worker_concurrency") == 100
    assert value(series, "conveyor_worker_stale_acks_total") == 0
    assert value(series, "conveyor_worker_leases_lost_total") == 0
    assert value(series, "conveyor_worker_lease_renewals_total") >= 1, "the beat that told of the cancel"
    assert value(series, "conveyor_worker_redis_round_trip_seconds_count") >= 1
    assert 0 <= value(series, "conveyor_worker_event_loop_lag_seconds") < 5
    assert 0 <= value(series, "conveyor_worker_heartbeat_age_seconds") < 1.5
    assert value(series, "conveyor_worker_up") == 1
    assert livez.status_code == 200 and livez.headers["content-type"] == "application/json"
    assert livez.json()["status"] == "ok"
    assert worker.metrics_address is None, "served while the worker serves, not after"


async def _state_is(aclient: AsyncClient, queue: str, job_id: str, state: JobState) -> bool:
    return (await aclient.get_job(queue, job_id)).state is state


async def test_with_metrics_off_nothing_is_counted_or_served(
    aclient: AsyncClient, tasks: Tasks, url: str
) -> None:
    @tasks.task
    async def fine() -> str:
        return "fine"

    async with running_worker(tasks, url) as worker:
        handle = await aclient.enqueue(fine)
        assert await handle.result(timeout=5) == "fine"
        assert worker.metrics is None and worker.metrics_address is None
        # Each step of the job path checks for None and does nothing more.
        assert worker._runner is not None and worker._runner._metrics is None
        assert worker._acks._metrics is None
        assert worker._heartbeat is not None and worker._heartbeat.figures is None
        assert not any(t.name.startswith("conveyor-metrics") for t in threading.enumerate())


@pytest.mark.serial  # blocks the event loop on purpose and reads the time it took
async def test_livez_says_503_while_the_event_loop_is_blocked(tasks: Tasks, url: str) -> None:
    @tasks.task
    async def fine() -> None:
        return None

    async with running_worker(tasks, url, metrics_port=0, max_loop_block=0.5) as worker:
        await wait_until(lambda: worker._heartbeat is not None and worker.metrics_address is not None)
        assert worker.metrics_address is not None
        livez = f"http://127.0.0.1:{worker.metrics_address[1]}/livez"
        await wait_until(lambda: httpx.get(livez, timeout=5).status_code == 200)
        blocked, lag = _block_the_loop_then_ask(livez, 1.0)
        await wait_until(lambda: httpx.get(livez, timeout=5).status_code == 200)
    assert blocked.status_code == 503 and blocked.json()["status"] == "unhealthy"
    assert blocked.json()["loop_silent_seconds"] > 0.5
    assert value(parse(lag.text)[1], "conveyor_worker_event_loop_lag_seconds") >= 0.4


def _block_the_loop_then_ask(livez: str, seconds: float) -> tuple[httpx.Response, httpx.Response]:
    """Called on the event loop, which it blocks; the server has a thread of its own and
    answers all the same."""
    time.sleep(seconds)
    return httpx.get(livez, timeout=5), httpx.get(livez.replace("livez", "metrics"), timeout=5)


# ---------------------------------------------------------------------- the HTTP server
def test_the_server_answers_only_what_it_serves() -> None:
    server = MetricsServer("127.0.0.1", 0, metrics=lambda: "x 1\n", health=lambda: (False, {"why": "test"}))
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert httpx.get(base + "/metrics?name=x", timeout=5).text == "x 1\n"
        head = httpx.head(base + "/metrics", timeout=5)
        assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == "4"
        livez = httpx.get(base + "/livez", timeout=5)
        assert (livez.status_code, livez.json()) == (503, {"why": "test"})
        assert httpx.get(base + "/", timeout=5).status_code == 404
        post = httpx.post(base + "/metrics", timeout=5)
        assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"
        with pytest.raises(PortUnavailable, match=f"cannot serve metrics on 127.0.0.1:{server.port}"):
            MetricsServer("127.0.0.1", server.port, metrics=str, health=lambda: (True, {})).start()
    finally:
        server.stop()
    assert not server._thread or not server._thread.is_alive()


# ---------------------------------------------------------------------- several processes
def _snapshot(pid: int, *, started: int, healthy: bool = True, in_flight: int = 0) -> Snapshot:
    counts = [0] * (len(BOUNDS_SECONDS) + 1)
    counts[3] = started - in_flight
    return Snapshot(
        pid=pid,
        at=time.time(),
        healthy=healthy,
        jobs=[["q", "t", started, started - in_flight, 0, 0, 0, 0.01 * started, counts]],
        leases_renewed=started,
        leases_lost=0,
        stale_acks=0,
        redis_round_trip=counts,
        redis_round_trip_sum=0.0,
        in_flight={"q": in_flight},
        concurrency=10,
        threads_busy=0,
        threads_max=4,
        loop_lag=0.001 * pid,
        heartbeat_age=0.1,
    )


def _write(path: str, snapshot: Snapshot) -> None:
    Path(path).write_text(json.dumps(snapshot))


def test_a_child_that_exits_is_kept_in_the_sums_and_out_of_the_gauges(tmp_path: Path) -> None:
    figures = ProcessesMetrics(str(tmp_path))
    first, second = figures.next_path(0), figures.next_path(1)
    for path in (first, second):
        figures.started(path)
    _write(first, _snapshot(1, started=7, in_flight=2))
    _write(second, _snapshot(2, started=5, in_flight=1))
    before = parse(figures.text())[1]
    assert value(before, "conveyor_worker_jobs_started_total", queue="q", task="t") == 12
    assert value(before, "conveyor_worker_jobs_in_flight", queue="q") == 3
    assert value(before, "conveyor_worker_concurrency") == 20
    assert value(before, "conveyor_worker_event_loop_lag_seconds") == 0.002, "the worst, not the sum"
    assert figures.health()[0]

    # The first child dies after one more job; its replacement starts from nothing.
    _write(first, _snapshot(1, started=8))
    figures.exited(first)
    replacement = figures.next_path(0)
    figures.started(replacement)
    after = parse(figures.text())[1]
    assert value(after, "conveyor_worker_jobs_started_total", queue="q", task="t") == 13
    assert value(after, "conveyor_worker_jobs_in_flight", queue="q") == 1, "live children only"
    assert value(after, "conveyor_worker_concurrency") == 10
    assert not Path(first).exists(), "folded into the total, then deleted"
    healthy, details = figures.health()
    assert healthy and len(details["processes"]) == 2, "the replacement has not written yet: starting"

    _write(replacement, _snapshot(3, started=1))
    again = parse(figures.text())[1]
    assert value(again, "conveyor_worker_jobs_started_total", queue="q", task="t") == 14
    assert value(again, "conveyor_worker_lease_renewals_total") == 14
    _write(second, _snapshot(2, started=5, healthy=False))
    assert not figures.health()[0], "one unhealthy child makes the whole unhealthy"


def test_a_snapshot_round_trips_through_its_file(tmp_path: Path) -> None:
    worker = Worker(Tasks(queue="q"), url="redis://127.0.0.1:1", metrics_port=0)
    assert worker.metrics is not None
    worker.metrics.task("q", "t").started += 2
    worker.metrics.task("q", "t").observe(0.003)
    path = str(tmp_path / "one.json")
    write_snapshot(worker.metrics, path)
    snapshot = json.loads(Path(path).read_text())
    assert snapshot["jobs"][0][:3] == ["q", "t", 2] and snapshot["in_flight"] == {"q": 1}
    assert snapshot["jobs"][0][-1][2] == 1, "0.003 s falls in the 0.005 bucket"


def test_livez_wants_a_heartbeat_that_still_beats_not_one_that_reaches_redis() -> None:
    worker = Worker(Tasks(queue="q"), url="redis://127.0.0.1:1", metrics_port=0, lease=2)
    metrics = worker.metrics
    assert metrics is not None
    assert metrics.health()[0], "starting: no heartbeat yet, the loop is all there is"
    metrics.beat.attempted_at = time.monotonic() - 1  # beating, though Redis is away for 30 s
    metrics.beat.succeeded_at = time.monotonic() - 30
    healthy, details = metrics.health()
    assert healthy and details["heartbeat_age_seconds"] >= 30
    metrics.beat.attempted_at = time.monotonic() - 5  # two leases without a round: stuck
    healthy, details = metrics.health()
    assert not healthy and details["status"] == "unhealthy"


APP = """
import asyncio
import os

from conveyor import Tasks

tasks = Tasks(queue=os.environ["TEST_QUEUE"])


@tasks.task
async def fine() -> int:
    await asyncio.sleep(0.02)  # long enough that one process alone does not take every job
    return os.getpid()


@tasks.task(retries=0)
async def broken() -> None:
    raise ValueError("for good")


@tasks.task
async def slow() -> None:
    await asyncio.sleep(30)
"""


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "metrics_app.py").write_text(textwrap.dedent(APP))
    yield tmp_path


@pytest.mark.serial  # runs a supervisor and its processes, kills one, stops them with a signal
def test_a_supervisor_serves_the_sum_of_its_processes(
    client: Client, url: str, queue: str, app: Path
) -> None:
    port = free_port()
    env = {**os.environ, "CONVEYOR_REDIS_URL": url, "TEST_QUEUE": queue, "PYTHONPATH": f"{app}:{ROOT}"}
    env["CONVEYOR_WORKER_METRICS_PORT"] = str(port)  # the env variable, as a pod would set it
    supervisor = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "conveyor",
            "worker",
            "metrics_app:tasks",
            "--processes",
            "2",
            "--concurrency",
            "5",
            "--log-level",
            "warning",
        ],
        env=env,
        cwd=ROOT,
    )
    fine, broken, slow = app_tasks(queue)
    try:
        _wait_for(lambda: sum(w.get("queues") == queue for w in client.workers()) == 2)
        handles = client.enqueue_many([fine.call() for _ in range(200)] + [broken.call() for _ in range(7)])
        _wait_for(lambda: client.counts(queue)["completed"] == 200 and client.counts(queue)["failed"] == 7)
        pids = {client.get_job(queue, h.id).result for h in handles[:200]}
        assert len(pids) == 2, "both processes ran jobs"

        def summed() -> Series:
            return scrape(port)[1]

        _wait_for(
            lambda: maybe(summed(), "conveyor_worker_jobs_completed_total", queue=queue, task="fine") == 200
        )
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        lint(text)
        types, series = parse(text)
        assert types == WORKER_FAMILIES
        assert value(series, "conveyor_worker_jobs_started_total", queue=queue, task="fine") == 200
        assert value(series, "conveyor_worker_jobs_failed_total", queue=queue, task="broken") == 7
        assert value(series, "conveyor_worker_job_run_seconds_count", queue=queue, task="fine") == 200
        assert value(series, "conveyor_worker_concurrency") == 10, "two processes of 5"
        assert value(series, "conveyor_worker_jobs_in_flight", queue=queue) == 0
        livez = httpx.get(f"http://127.0.0.1:{port}/livez", timeout=5)
        assert livez.status_code == 200 and len(livez.json()["processes"]) == 2

        # A child killed while it runs a job: the supervisor replaces it; no counter goes back.
        stuck = client.enqueue(slow)
        _wait_for(lambda: client.get_job(queue, stuck.id).state is JobState.ACTIVE)
        _wait_for(
            lambda: maybe(summed(), "conveyor_worker_jobs_started_total", queue=queue, task="slow") == 1
        )
        victim = int(str(client.get_job(queue, stuck.id).worker).split(":")[-2])
        os.kill(victim, signal.SIGKILL)
        seen = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            series = summed()
            seen.append(value(series, "conveyor_worker_jobs_started_total", queue=queue, task="fine"))
            live = httpx.get(f"http://127.0.0.1:{port}/livez", timeout=5).json()["processes"]
            if len(live) == 2 and all(p.get("pid") not in (None, victim) for p in live):
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the killed process was not replaced")
        assert seen == [200] * len(seen), "the dead child's counts stay in the sum"
        assert value(series, "conveyor_worker_jobs_started_total", queue=queue, task="slow") == 1
        assert value(series, "conveyor_worker_jobs_in_flight", queue=queue) == 0, "its running job is gone"
    finally:
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=30) == 0
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


def app_tasks(queue: str) -> tuple[Any, Any, Any]:
    """Stand-ins for the app's tasks, to enqueue them by name (the app runs in the subprocess)."""
    named = Tasks(queue=queue)

    @named.task(name="fine")
    async def fine() -> int:
        return 0

    @named.task(name="broken")
    async def broken() -> None: ...

    @named.task(name="slow")
    async def slow() -> None: ...

    return fine, broken, slow


def _wait_for(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)

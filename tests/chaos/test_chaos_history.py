"""The history under faults, checked against a ledger: archivers SIGKILLed every second or so,
PostgreSQL stopped for a while and restarted, then killed -9 (mid-transaction, most likely)
and restarted, while workers drain jobs with known outcomes. In the end every finished job
is in the store exactly once, with the state and attempts it had in Redis.

Fast variant in ``make test``; full size in ``make chaos-faults`` (knobs
``CONVEYOR_CHAOS_HISTORY_JOBS``, ``..._RATE``, ``..._PG_DOWN`` seconds,
``..._KILL_EVERY`` seconds), figures in RELIABILITY.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from harness import ROOT, Producer, Workers, ledger_work, report
from history.conftest import PostgresServer
from ledger import read as read_ledger

from conveyor import Client
from conveyor.ops import history as handoff

pytestmark = [pytest.mark.slow, pytest.mark.single_node("its own Redis and PostgreSQL, killed and restarted")]

JOBS = int(os.environ.get("CONVEYOR_CHAOS_HISTORY_JOBS", "3000"))
RATE = float(os.environ.get("CONVEYOR_CHAOS_HISTORY_RATE", "600"))
PG_DOWN = float(os.environ.get("CONVEYOR_CHAOS_HISTORY_PG_DOWN", "2"))
KILL_EVERY = float(os.environ.get("CONVEYOR_CHAOS_HISTORY_KILL_EVERY", "1"))


class Archivers:
    """``count`` processes of ``conveyor history archive``, SIGKILLed and restarted at will."""

    def __init__(self, redis_url: str, history_url: str, queue: str, count: int = 2) -> None:
        self.command = [
            sys.executable, "-m", "conveyor", "history", "archive", "--queue", queue,
            "--claim-idle", "2", "--log-level", "warning",
        ]  # fmt: skip
        self.env = {
            **os.environ,
            "CONVEYOR_REDIS_URL": redis_url,
            "CONVEYOR_HISTORY_URL": history_url,
            "PYTHONPATH": str(ROOT / "src"),
        }
        self.procs = [self._spawn() for _ in range(count)]
        self.kills = 0

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.command, env=self.env, cwd=ROOT)

    def kill_one(self) -> None:
        index = random.randrange(len(self.procs))
        self.procs[index].send_signal(signal.SIGKILL)
        self.procs[index].wait()
        self.procs[index] = self._spawn()
        self.kills += 1

    def stop(self) -> list[int | None]:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        codes = []
        for proc in self.procs:
            try:
                codes.append(proc.wait(timeout=20))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                codes.append(None)
        return codes


def pg_pause(server: Any) -> None:
    """Stop PostgreSQL as an operator would (fast shutdown), keeping its data."""
    server.process.send_signal(signal.SIGINT)
    server.process.wait(timeout=30)


def in_directory(directory: Path) -> list[int]:
    """Processes whose working directory is ``directory``: a PostgreSQL server's processes
    (the postmaster and every backend run in its data directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if Path(os.readlink(entry / "cwd")) == directory:
                    found.append(int(entry.name))
    return found


def pg_kill(server: Any) -> None:
    """kill -9 the postmaster and every backend: whatever transaction runs dies mid-way."""
    server.process.kill()
    server.process.wait(timeout=30)
    deadline = time.monotonic() + 10
    while (left := in_directory(server.data.resolve())) and time.monotonic() < deadline:
        for pid in left:  # backends it had, or was starting as it died
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    assert not left, f"PostgreSQL processes left after kill -9: {left}"


def pg_resume(server: Any) -> None:
    for _ in range(50):  # same data directory, same port
        if server._start_server():
            return
        time.sleep(0.1)
    raise AssertionError(server.log())


def stored_rows(url: str, queue: str) -> list[tuple[str, str, int, int]]:
    """(id, state, attempts, n) of every stored job; n from its stored arguments."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT id, state, attempts, arguments FROM conveyor_history.jobs WHERE queue = %s", (queue,)
        ).fetchall()
    found = []
    for job_id, state, attempts, arguments in rows:
        data = json.loads(arguments)
        n = data[0] if isinstance(data, list) else data["args"][0]
        found.append((str(job_id), str(state), int(attempts), int(n)))
    return found


def run_with_faults(
    client: Client,
    keys: Any,
    producer: Producer,
    archivers: Archivers,
    pg: Any,
    plan: list[tuple[float, str]],
    kill_every: float | None,
) -> tuple[list[str], int]:
    """While the producer enqueues (and until the plan is done): an archiver SIGKILLed every
    ``kill_every`` s or so; PostgreSQL paused, resumed or killed -9 (and restarted) at the
    seconds the plan says. Returns what was done and the most jobs the hand-off held."""
    faults: list[str] = []
    began = time.monotonic()
    plan = sorted(plan, key=lambda step: step[0])  # in time; same time: in the order given
    next_kill = began + kill_every if kill_every else float("inf")
    most_backlog = 0
    while not producer.done.is_set() or plan:
        now = time.monotonic() - began
        if plan and now >= plan[0][0]:
            _, action = plan.pop(0)
            if action == "pause":
                pg_pause(pg)
            elif action == "resume":
                pg_resume(pg)
            else:
                pg_kill(pg)
                pg_resume(pg)
            faults.append(f"{action}@{now:.1f}s")
        if kill_every and time.monotonic() >= next_kill:
            archivers.kill_one()
            next_kill = time.monotonic() + kill_every * random.uniform(0.5, 1.5)
        most_backlog = max(most_backlog, client.run(handoff.backlog(keys)).jobs)
        time.sleep(0.05)
    return faults, most_backlog


def run_scenario(
    server_factory: Any,
    tmp_path: Path,
    name: str,
    jobs: int,
    rate: float,
    plan: list[tuple[float, str]],
    kill_every: float | None,
    bound: int | None = None,
) -> dict[str, Any]:
    """Workers drain ``jobs`` jobs of known outcomes enqueued at ``rate``, archived by two
    ``conveyor history archive`` processes into a PostgreSQL of the scenario's own, through
    the faults given; then the store is compared with the ledger. Returns the figures."""
    began = time.monotonic()
    redis = server_factory()
    # A server of this test's own, stopped and killed -9: its commits must survive that
    # (synchronous_commit on; fsync stays off, since the machine itself does not crash).
    pg = PostgresServer(durable_commits=True).start()
    history_url = pg.create_database("chaos")
    queue = "history-chaos"
    ledger_dir = tmp_path / "ledger"
    ledger_dir.mkdir()
    work = ledger_work(queue)
    from tests.apps.ledger_app import flaky

    # Known outcomes: most complete at once; every 7th fails once and completes on its second
    # attempt; every 10th fails every attempt and is dead-lettered after 6.
    calls = []
    expected_state: dict[int, tuple[str, int]] = {}
    for n in range(jobs):
        if n % 10 == 0:
            calls.append(flaky.with_options(queue=queue).call(n, failures=100))
            expected_state[n] = ("failed", 6)
        elif n % 7 == 0:
            calls.append(flaky.with_options(queue=queue).call(n, failures=1))
            expected_state[n] = ("completed", 2)
        else:
            calls.append(work.call(n))
            expected_state[n] = ("completed", 1)

    if bound is not None:  # set before the archivers start: they keep a bound set before
        with Client.from_url(redis.url) as client:
            client.run(handoff.enable(client.keys(queue), bound, replace=True))
    archivers = Archivers(redis.url, history_url, queue)
    workers: Workers | None = None
    faults: list[str] = []
    most_backlog = 0
    try:
        with Client.from_url(redis.url) as client:
            keys = client.keys(queue)
            deadline = time.monotonic() + 30
            while not client.run(handoff.backlog(keys)).enabled:  # the archivers turned it on
                assert time.monotonic() < deadline, "no archiver turned history on"
                time.sleep(0.05)
            workers = Workers(redis.url, queue, ledger_dir, count=2, CHAOS_KEEP_COMPLETED="0")
            producer = Producer(redis.url, ledger_dir, calls, rate=rate)
            producer.start()
            faults, most_backlog = run_with_faults(client, keys, producer, archivers, pg, plan, kill_every)
            producer.join()
            assert not producer.errors, producer.errors[:3]
            # Every job finishes; then the archivers, left alone, empty the hand-off.
            deadline = time.monotonic() + 60 + jobs / 200
            while True:
                counts = client.counts(queue)
                backlog = client.run(handoff.backlog(keys))
                if (
                    backlog.jobs == 0
                    and backlog.entries == 0
                    and sum(counts[s] for s in ("waiting", "active", "delayed")) == 0
                ):
                    break
                assert time.monotonic() < deadline, f"not settled: {counts}, {backlog}"
                time.sleep(0.2)
            dropped = backlog.dropped
    finally:
        if workers is not None:
            workers.stop()
        stopped = archivers.stop()
        rows = stored_rows(history_url, queue) if pg.process and pg.process.poll() is None else []
        pg.stop()  # also when the run failed: no server is left behind

    accepted = read_ledger(ledger_dir).accepted
    assert len(accepted) == jobs
    by_id: dict[str, list[tuple[str, int, int]]] = {}
    for job_id, state, attempts, n in rows:
        by_id.setdefault(job_id, []).append((state, attempts, n))
    figures = {
        "jobs": jobs,
        "stored": len(rows),
        "missing": len([job_id for job_id in accepted if job_id not in by_id]),
        "duplicated": [job_id for job_id, found in by_id.items() if len(found) > 1],
        "wrong": [
            (job_id, state, attempts, expected_state[n])
            for job_id, [(state, attempts, n), *_] in by_id.items()
            if (state, attempts) != expected_state[n]
        ],
        "dropped": dropped,
        "archiver_kills": archivers.kills,
        "faults": " ".join(faults),
        "most_backlog": most_backlog,
        "archiver_exits": stopped,
    }
    figures["elapsed_s"] = round(time.monotonic() - began, 1)
    # Lost: missing from the store and not counted as dropped (a full hand-off counts its own).
    figures["lost"] = figures["missing"] - dropped
    report(name, {**figures, "duplicated": len(figures["duplicated"]), "wrong": len(figures["wrong"])})
    return figures


def test_history_is_exact_through_archiver_kills_and_database_outages(
    server_factory: Any, tmp_path: Path
) -> None:
    run_for = JOBS / RATE
    down = run_for * 0.3
    plan = [(down, "pause"), (down + PG_DOWN, "resume"), (max(run_for * 0.7, down + PG_DOWN + 0.5), "kill9")]
    figures = run_scenario(server_factory, tmp_path, "history", JOBS, RATE, plan, KILL_EVERY)
    assert figures["dropped"] == 0
    assert figures["missing"] == 0 and figures["lost"] == 0
    assert not figures["duplicated"], figures["duplicated"][:5]
    assert not figures["wrong"], figures["wrong"][:5]
    assert figures["stored"] == JOBS


def test_a_full_hand_off_counts_every_job_it_could_not_hold(server_factory: Any, tmp_path: Path) -> None:
    """The database away for the whole run and a bound of 300 jobs: jobs keep finishing, the
    hand-off holds 300 of them, and each of the others is counted as dropped -- stored plus
    dropped is every job, and what was stored is exact."""
    jobs = 2000
    plan = [(0.0, "pause"), (jobs / 1000 + 3, "resume")]
    figures = run_scenario(server_factory, tmp_path, "history-bound", jobs, 1000, plan, None, bound=300)
    assert figures["dropped"] > 0
    assert figures["stored"] + figures["dropped"] == jobs
    assert figures["missing"] == figures["dropped"] and figures["lost"] == 0
    assert not figures["duplicated"] and not figures["wrong"]

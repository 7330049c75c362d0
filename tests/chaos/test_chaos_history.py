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


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


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
                codes.append(None)
        return codes


def pg_pause(server: Any) -> None:
    """Stop PostgreSQL as an operator would (fast shutdown), keeping its data."""
    server.process.send_signal(signal.SIGINT)
    server.process.wait(timeout=30)


def pg_kill(server: Any) -> None:
    """kill -9 the postmaster and every backend: whatever transaction runs dies mid-way."""
    pids = [server.process.pid, *descendants(server.process.pid)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    server.process.wait(timeout=30)
    time.sleep(0.2)  # the backends' exits, so the shared memory is released before the restart


def pg_resume(server: Any) -> None:
    assert server._start_server(), server.log()  # same data directory, same port


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
    client: Client, keys: Any, producer: Producer, archivers: Archivers, pg: Any
) -> tuple[list[str], int]:
    """While the producer enqueues: an archiver SIGKILLed every KILL_EVERY s or so; PostgreSQL
    stopped at 30 % of the run for PG_DOWN s, killed -9 and restarted at 70 %. Returns what
    was done and the largest hand-off seen."""
    faults: list[str] = []
    run_for = JOBS / RATE
    began = time.monotonic()
    plan = [(run_for * 0.3, "pause"), (run_for * 0.3 + PG_DOWN, "resume"), (run_for * 0.7, "kill9")]
    next_kill = began + KILL_EVERY
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
        if time.monotonic() >= next_kill:
            archivers.kill_one()
            next_kill = time.monotonic() + KILL_EVERY * random.uniform(0.5, 1.5)
        most_backlog = max(most_backlog, client.run(handoff.backlog(keys)).jobs)
        time.sleep(0.05)
    return faults, most_backlog


def test_history_is_exact_through_archiver_kills_and_database_outages(
    server_factory: Any, tmp_path: Path
) -> None:
    redis = server_factory()
    pg = PostgresServer().start()  # a server of this test's own: it is stopped and killed
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
    for n in range(JOBS):
        if n % 10 == 0:
            calls.append(flaky.with_options(queue=queue).call(n, failures=100))
            expected_state[n] = ("failed", 6)
        elif n % 7 == 0:
            calls.append(flaky.with_options(queue=queue).call(n, failures=1))
            expected_state[n] = ("completed", 2)
        else:
            calls.append(work.call(n))
            expected_state[n] = ("completed", 1)

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
            producer = Producer(redis.url, ledger_dir, calls, rate=RATE)
            producer.start()
            faults, most_backlog = run_with_faults(client, keys, producer, archivers, pg)
            producer.join()
            assert not producer.errors, producer.errors[:3]
            # Every job finishes; then the archivers, left alone, empty the hand-off.
            deadline = time.monotonic() + 60 + JOBS / 200
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
        archivers.stop()

    accepted = read_ledger(ledger_dir).accepted
    assert len(accepted) == JOBS
    rows = stored_rows(history_url, queue)
    pg.stop()
    by_id: dict[str, list[tuple[str, int, int]]] = {}
    for job_id, state, attempts, n in rows:
        by_id.setdefault(job_id, []).append((state, attempts, n))
    duplicated = [job_id for job_id, found in by_id.items() if len(found) > 1]
    missing = [job_id for job_id in accepted if job_id not in by_id]
    wrong = [
        (job_id, state, attempts, expected_state[n])
        for job_id, [(state, attempts, n), *_] in by_id.items()
        if (state, attempts) != expected_state[n]
    ]
    report(
        "history",
        {
            "jobs": JOBS,
            "stored": len(rows),
            "missing": len(missing),
            "duplicated": len(duplicated),
            "wrong": len(wrong),
            "dropped": dropped,
            "archiver_kills": archivers.kills,
            "faults": " ".join(faults),
            "most_backlog": most_backlog,
        },
    )
    assert dropped == 0
    assert not missing, missing[:5]
    assert not duplicated, duplicated[:5]
    assert not wrong, wrong[:5]
    assert len(rows) == JOBS

"""Workers as real processes: SIGKILL recovery, SIGTERM, --processes, and the embedded server's lifetime."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conveyor import Client, JobState, Tasks

pytestmark = pytest.mark.serial  # alone in make test (conftest.py): kills processes, times their recovery

ROOT = Path(__file__).resolve().parents[2]


def start_worker(url: str, queue: str, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CONVEYOR_REDIS_URL": url, "TEST_QUEUE": queue, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "conveyor",
            "worker",
            "tests.apps.recovery:tasks",
            "--log-level",
            "warning",
            *extra,
        ],
        env=env,
        cwd=ROOT,
    )


def wait_for(predicate, timeout: float) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)
    return time.monotonic() - start


def recovery_tasks(queue: str):  # type: ignore[no-untyped-def]
    tasks = Tasks(queue=queue)

    @tasks.task
    async def sleepy(seconds: float) -> int: ...

    @tasks.task
    async def noop() -> None: ...

    return sleepy, noop


def test_jobs_of_a_sigkilled_worker_are_redelivered_within_lease_plus_sweep(
    client: Client, url: str, queue: str
) -> None:
    sleepy, _ = recovery_tasks(queue)
    victim = start_worker(url, queue, "--lease", "2", "--sweep-interval", "1")
    try:
        handles = client.enqueue_many([sleepy.call(30) for _ in range(5)])
        wait_for(lambda: client.counts(queue)["active"] == 5, 10)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        killed_at = time.monotonic()
        rescuer = start_worker(url, queue, "--lease", "2", "--sweep-interval", "1", "--shutdown-grace", "0.5")
        try:
            wait_for(lambda: all(client.get_job(queue, h.id).crashes == 1 for h in handles), 10)
            # lease + sweep interval, plus slack for starting the rescuer process on a busy machine
            assert time.monotonic() - killed_at <= 2 + 1 + 3, "re-delivered within lease + sweep"
            job = client.get_job(queue, handles[0].id)
            assert job.state is JobState.ACTIVE and job.attempts == 2 and job.worker != str(victim.pid)
        finally:
            rescuer.send_signal(signal.SIGTERM)
            rescuer.wait(timeout=20)
    finally:
        if victim.poll() is None:
            victim.kill()


def test_sigterm_lets_running_jobs_finish_within_grace(client: Client, url: str, queue: str) -> None:
    sleepy, _ = recovery_tasks(queue)
    worker = start_worker(url, queue, "--shutdown-grace", "5")
    try:
        quick = client.enqueue(sleepy, 0.5)
        wait_for(lambda: client.counts(queue)["active"] == 1, 10)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=10) == 0
        assert client.get_job(queue, quick.id).state is JobState.COMPLETED
    finally:
        if worker.poll() is None:
            worker.kill()


def test_second_signal_stops_at_once_and_hands_jobs_back(client: Client, url: str, queue: str) -> None:
    sleepy, _ = recovery_tasks(queue)
    worker = start_worker(url, queue, "--shutdown-grace", "60")
    try:
        slow = client.enqueue(sleepy, 60)
        wait_for(lambda: client.counts(queue)["active"] == 1, 10)
        worker.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=10) == 0
        job = client.get_job(queue, slow.id)
        assert job.state is JobState.WAITING and job.attempts == 0
    finally:
        if worker.poll() is None:
            worker.kill()


def test_processes_supervisor_restarts_a_dead_child(client: Client, url: str, queue: str) -> None:
    _, noop = recovery_tasks(queue)
    supervisor = start_worker(url, queue, "--processes", "2")
    try:

        def pids() -> set[int]:
            return {int(w["pid"]) for w in client.workers() if w.get("queues") == queue}

        wait_for(lambda: len(pids()) == 2, 15)
        first = pids()
        child_pid = min(first)
        os.kill(child_pid, signal.SIGKILL)
        # The dead child's registry entry lingers until its TTL; a new pid shows the restart.
        wait_for(lambda: len(pids() - first) == 1, 15)
        handles = client.enqueue_many([noop.call() for _ in range(200)])
        wait_for(lambda: client.counts(queue)["completed"] == 200, 15)
        assert all(client.get_job(queue, h.id).state is JobState.COMPLETED for h in handles[-5:])
    finally:
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=30) == 0


def test_embedded_server_dies_with_its_sigkilled_parent(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        from conveyor.dev.server import RedisServer
        server = RedisServer(directory={str(tmp_path)!r}).start()
        print(server.process.pid, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert parent.stdout is not None
        server_pid = int(parent.stdout.readline())
        os.kill(server_pid, 0)  # alive
        parent.kill()
        parent.wait()
        wait_for(lambda: not _alive(server_pid), 5)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if parent.stdout:
            parent.stdout.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by init) counts as dead
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except FileNotFoundError:
        return False


def test_aof_keeps_accepted_jobs_across_sigkill(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(appendfsync="always")
    queue = "aof"
    _, noop = recovery_tasks(queue)
    with Client.from_url(server.url) as c:
        handles = c.enqueue_many([noop.call() for _ in range(1000)])
    server.restart(kill=True)
    with Client.from_url(server.url) as c:
        assert c.counts(queue)["waiting"] == 1000
        assert c.get_job(queue, handles[-1].id).state is JobState.WAITING


@pytest.mark.parametrize("bad", ["redis://x:1", "unknown://x"])
def test_cli_reports_unreachable_or_bad_url_clearly(bad: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "conveyor", "info", "--url", bad], capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "error" in result.stderr.lower()


def test_worker_rides_out_a_redis_crash_and_restart(server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(appendfsync="always")
    queue = "restart"
    _, noop = recovery_tasks(queue)
    worker = start_worker(server.url, queue)
    try:
        with Client.from_url(server.url) as c:
            c.enqueue_many([noop.call() for _ in range(100)])
            wait_for(lambda: c.counts(queue)["completed"] == 100, 10)
        server.restart(kill=True)  # SIGKILL, then start again from the AOF
        back = time.monotonic()
        with Client.from_url(server.url) as c:
            assert c.counts(queue)["completed"] == 100, "completed jobs survived the crash"
            c.enqueue_many([noop.call() for _ in range(100)])
            wait_for(lambda: c.counts(queue)["completed"] == 200, 15)
        assert time.monotonic() - back < 10, "the same worker process resumed"
        assert worker.poll() is None, "the worker did not exit"
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)


def test_frozen_worker_cannot_overwrite_the_newer_attempt(client: Client, url: str, queue: str) -> None:
    sleepy, _ = recovery_tasks(queue)
    frozen = start_worker(url, queue, "--lease", "2", "--sweep-interval", "0.5")
    rescuer = None
    try:
        handle = client.enqueue(sleepy, 3)
        wait_for(lambda: client.get_job(queue, handle.id).state is JobState.ACTIVE, 10)
        first_token = client.get_job(queue, handle.id).token
        os.kill(frozen.pid, signal.SIGSTOP)  # a long GC pause, a stopped VM: alive but silent
        rescuer = start_worker(url, queue, "--lease", "2", "--sweep-interval", "0.5")
        wait_for(lambda: (client.get_job(queue, handle.id).token or 0) > (first_token or 0), 15)
        os.kill(frozen.pid, signal.SIGCONT)  # wakes, finishes its stale attempt first
        assert handle.result(timeout=15) == rescuer.pid, "the newer attempt's result stands"
        job = client.get_job(queue, handle.id)
        assert job.attempts == 2 and job.crashes == 1
    finally:
        for proc in (frozen, rescuer):
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)

"""Stop signals reach a worker process in every phase (issue 14, defects 1-3).

Real processes and real signals: each worker runs in a session of its own, so that
``os.killpg`` does what a terminal's Ctrl-C (or systemd's stop of a cgroup) does -- the signal
reaches every process of the group at once.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conveyor import Client, JobState, Tasks

pytestmark = pytest.mark.serial  # alone in make test (conftest.py): signals processes, times their stops

ROOT = Path(__file__).resolve().parents[2]


def start_worker(url: str, queue: str, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TEST_QUEUE": queue, "PYTHONPATH": str(ROOT)}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "conveyor", "worker", "tests.apps.recovery:tasks", "--url", url, *extra],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=out,
            start_new_session=True,  # a process group of its own, as a terminal gives a command
        )


def wait_for(predicate: Callable[[], object], timeout: float, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(0.05)


def exits_within(proc: subprocess.Popen[bytes], seconds: float, log: Path) -> int:
    """The exit code, if the process ends within ``seconds``; fails (and kills it) if not."""
    try:
        return proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-10:])
        raise AssertionError(f"still running {seconds} s after the signal; its log ends:\n{tail}") from None


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test started: whatever still runs at the end is killed, with its group."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def stubs(queue: str) -> Tasks:
    """The tasks of tests/apps/recovery.py, to enqueue them by name."""
    tasks = Tasks(queue=queue)

    @tasks.task
    async def sleepy(seconds: float) -> int:
        return 0

    @tasks.task
    def blocking(seconds: float) -> int:
        return 0

    return tasks


# --------------------------------------------------------------- defect 1: while starting
def test_a_signal_stops_a_worker_that_retries_an_unreachable_redis(
    procs: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    with socket.socket() as probe:  # a free port, nothing listening on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "worker.log"
    worker = start_worker(f"redis://127.0.0.1:{port}/0", "unreachable", log)
    procs.append(worker)
    wait_for(lambda: log.read_text().count("Redis unavailable") >= 3, 15, "retrying the registration")
    os.kill(worker.pid, signal.SIGTERM)
    assert exits_within(worker, 1.5, log) == 0


def test_ctrl_c_stops_a_worker_whose_connection_gets_no_answer(
    procs: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    # A server that takes the connection and never answers (a hung Redis, a blackhole on the
    # way): the worker is stuck in its first command, for 30 s by the URL's timeouts.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        log = tmp_path / "worker.log"
        url = f"redis://127.0.0.1:{port}/0?socket_timeout=30&socket_connect_timeout=30"
        worker = start_worker(url, "silent", log)
        procs.append(worker)
        silent.settimeout(15)
        connection, _ = silent.accept()
        with connection:
            time.sleep(0.3)  # its first command is sent and waits for an answer
            os.killpg(worker.pid, signal.SIGINT)
            assert exits_within(worker, 1.5, log) == 0


# --------------------------------------------------------------- defect 2: stop at once
@pytest.mark.parametrize("stop", ["second-signal", "grace-runs-out"])
def test_a_sync_job_handed_back_does_not_keep_its_process_alive(
    stop: str, client: Client, url: str, queue: str, procs: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    """Its thread sleeps for 20 s and cannot be interrupted: once the job is handed back, the
    process must end rather than wait for it, or the job runs twice at the same time."""
    handle = client.enqueue(stubs(queue).get("blocking"), 20)
    first_log = tmp_path / "first.log"
    grace = "60" if stop == "second-signal" else "1"
    first = start_worker(url, queue, first_log, "--shutdown-grace", grace, "--lease", "5")
    procs.append(first)
    wait_for(lambda: client.get_job(queue, handle.id).state is JobState.ACTIVE, 15, "the job running")
    os.kill(first.pid, signal.SIGTERM)
    if stop == "second-signal":
        time.sleep(0.3)
        os.kill(first.pid, signal.SIGTERM)
    assert exits_within(first, 2 if stop == "second-signal" else 3, first_log) == 0
    job = client.get_job(queue, handle.id)
    assert job.state is JobState.WAITING and job.attempts == 0, "handed back at once"
    # Another worker runs it now; the first attempt ended with its process.
    second_log = tmp_path / "second.log"
    second = start_worker(url, queue, second_log, "--lease", "5")
    procs.append(second)
    wait_for(lambda: client.get_job(queue, handle.id).state is JobState.ACTIVE, 15, "re-run")
    assert f":{second.pid}:" in (client.get_job(queue, handle.id).worker or "")


# --------------------------------------------------------------- defect 3: --processes
@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm-to-each"])
def test_one_stop_signal_to_the_whole_group_lets_every_child_finish_its_job(
    stop: str, client: Client, url: str, queue: str, procs: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    """Every process of the group gets the signal, the children as well as the supervisor:
    the terminal's Ctrl-C (SIGINT to the foreground group), or systemd's stop (SIGTERM to each
    process of the cgroup), here with the children's signal handled before the supervisor's
    arrives -- signals that reach a process while one is still pending merge into one, which
    made the defect come and go with ``killpg``."""
    sleepy = stubs(queue).get("sleepy")
    log = tmp_path / "supervisor.log"
    supervisor = start_worker(url, queue, log, "--processes", "2", "--concurrency", "1")
    procs.append(supervisor)
    handles = client.enqueue_many([sleepy.call(3) for _ in range(2)])
    wait_for(lambda: client.counts(queue)["active"] == 2, 15, "a job running in each child")
    if stop == "ctrl-c":
        os.killpg(supervisor.pid, signal.SIGINT)
    else:
        children = {int(w["pid"]) for w in client.workers() if w.get("queues") == queue}
        assert len(children) == 2
        for pid in children:
            os.kill(pid, signal.SIGTERM)
        time.sleep(0.3)
        os.kill(supervisor.pid, signal.SIGTERM)
    assert exits_within(supervisor, 10, log) == 0
    states = [client.get_job(queue, h.id).state for h in handles]
    assert states == [JobState.COMPLETED, JobState.COMPLETED], "finished, not handed back"


def test_a_second_ctrl_c_stops_every_child_at_once(
    client: Client, url: str, queue: str, procs: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    """The supervisor's second order means "now", and the children end their processes
    although their sync jobs' threads still run (defect 2 under ``--processes``)."""
    blocking = stubs(queue).get("blocking")
    log = tmp_path / "supervisor.log"
    supervisor = start_worker(url, queue, log, "--processes", "2", "--concurrency", "1", "--lease", "5")
    procs.append(supervisor)
    handles = client.enqueue_many([blocking.call(20) for _ in range(2)])
    wait_for(lambda: client.counts(queue)["active"] == 2, 15, "a job running in each child")
    os.killpg(supervisor.pid, signal.SIGINT)
    time.sleep(0.5)
    os.killpg(supervisor.pid, signal.SIGINT)
    assert exits_within(supervisor, 2.5, log) == 0
    states = [client.get_job(queue, h.id).state for h in handles]
    assert states == [JobState.WAITING, JobState.WAITING], "handed back at once"

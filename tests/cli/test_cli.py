"""The conveyor command, run as a user runs it: a real process against the session's server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conveyor import Client, JobState, Tasks, ops

from helpers import run_cli as cli

ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_commands_and_env_vars(url: str) -> None:
    out = cli(url, "--help").stdout
    for command in ("worker", "enqueue", "info", "job", "jobs", "retry", "purge", "workers", "dev"):
        assert command in out
    worker_help = cli(url, "worker", "--help").stdout
    assert "CONVEYOR_CONCURRENCY" in worker_help and "CONVEYOR_MAX_LOOP_BLOCK" in worker_help


def test_enqueue_info_job_and_jobs(url: str, client: Client, queue: str) -> None:
    out = cli(url, "enqueue", "add", "1", "2", "--queue", queue, "--job-id", "cli-1").stdout
    assert "cli-1 created" in out
    again = cli(url, "enqueue", "add", "1", "2", "--queue", queue, "--job-id", "cli-1").stdout
    assert "already existed" in again
    job = client.get_job(queue, "cli-1")
    assert job.task == "add" and job.args == [1, 2]
    info = cli(url, "info", "--queue", queue).stdout
    assert queue in info and "waiting" in info
    shown = json.loads(cli(url, "job", "cli-1", "--queue", queue, "--json").stdout)
    assert shown["state"] == "waiting" and shown["args"] == [1, 2]
    listed = cli(url, "jobs", "--queue", queue, "--state", "waiting").stdout
    assert "cli-1" in listed and "of 1" in listed


def test_missing_job_is_a_clear_error(url: str, queue: str) -> None:
    result = cli(url, "job", "nope", "--queue", queue, code=None)
    assert result.returncode == 1 and "no job nope" in result.stderr and "Traceback" not in result.stderr


def test_retry_and_purge_from_the_cli(url: str, client: Client, queue: str) -> None:
    tasks = Tasks(queue=queue)

    @tasks.task
    async def w() -> None: ...

    client.enqueue_many([w.call() for _ in range(3)])
    jobs = client.run(ops.claim(client.keys(queue), 3, 10_000, "w")).jobs
    client.run(
        ops.fail(
            client.keys(queue),
            ops.Retention(-1, -1),
            [(j.id, j.token, b"{}", -1, ops.NOT_DEFERRED) for j in jobs],
        )
    )
    assert "1 job(s) moved" in cli(url, "retry", jobs[0].id, "--queue", queue).stdout
    assert client.get_job(queue, jobs[0].id).state is JobState.WAITING
    assert "2 job(s) moved" in cli(url, "retry", "--all", "--queue", queue).stdout
    assert "deleted 3" in cli(url, "purge", "--queue", queue, "--yes").stdout
    assert client.counts(queue)["waiting"] == 0


def test_worker_burst_from_the_cli_and_enqueue_wait(url: str, client: Client, queue: str) -> None:
    env_queue = {"TEST_QUEUE": queue, "PYTHONPATH": str(ROOT)}
    tasks = Tasks(queue=queue)

    @tasks.task
    async def noop() -> None: ...

    client.enqueue_many([noop.call() for _ in range(300)])
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "conveyor",
            "worker",
            "tests.apps.recovery:tasks",
            "--burst",
            "--max-loop-block",
            "30",
            "--log-format",
            "json",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "CONVEYOR_REDIS_URL": url, **env_queue},
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert client.counts(queue)["completed"] == 300
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    completed = [line for line in lines if line.get("event") == "completed"]
    assert len(completed) == 300, "one JSON log line per job event"
    assert {"queue", "job_id", "task", "attempt"} <= set(completed[0])


def test_bad_app_is_reported(url: str) -> None:
    result = cli(url, "worker", "no_such_module:tasks", code=None)
    assert result.returncode == 2 and "cannot import 'no_such_module'" in result.stderr


def test_pause_resume_limits_and_cancel_from_the_cli(url: str, client: Client, queue: str) -> None:
    assert "paused" in cli(url, "pause", "--queue", queue, "--create").stdout  # no job yet: insist
    assert client.settings_of(queue) == {"paused": 1}
    shown = cli(url, "limits", "--queue", queue, "--concurrency", "3", "--rate", "10/2").stdout
    assert "paused=yes" in shown and "concurrency=3" in shown and "10 per 2 s" in shown
    assert "resumed" in cli(url, "resume", "--queue", queue).stdout
    assert "rate=none" in cli(url, "limits", "--queue", queue, "--rate", "off", "--concurrency", "0").stdout
    assert client.settings_of(queue) == {}
    cli(url, "enqueue", "add", "1", "--queue", queue, "--job-id", "to-cancel")
    assert "cancelled" in cli(url, "cancel", "to-cancel", "--queue", queue).stdout
    assert client.get_job(queue, "to-cancel").state is JobState.CANCELLED


def test_any_option_can_come_from_the_environment(url: str, client: Client, queue: str) -> None:
    env = {**os.environ, "CONVEYOR_REDIS_URL": url, "CONVEYOR_QUEUE": queue, "CONVEYOR_ENQUEUE_PRIORITY": "7"}
    result = subprocess.run(
        [sys.executable, "-m", "conveyor", "enqueue", "add", "1", "--job-id", "from-env"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert client.get_job(queue, "from-env").priority == 7

"""A real Prometheus scrapes ``conveyor api`` at /metrics and a worker's ``--metrics-port``,
and its query API reports what the test did: K jobs waiting on a queue no worker serves, J
jobs drained through the worker, then J more.

Prometheus is Debian's binary (``apt-get install prometheus``), started on a free loopback
port with a temporary configuration and storage, scraping every second; the API and the
worker are the commands an operator runs, as processes, on the session's private Redis.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor import Client, Tasks

from api_helpers import TOKENS, free_port

pytestmark = [
    # Alone in make test (conftest.py): starts and signals processes, waits on scrape intervals.
    pytest.mark.serial,
    pytest.mark.single_node("one plain server is enough to check what Prometheus scrapes"),
]

ROOT = Path(__file__).resolve().parents[2]
CONVEYOR = Path(sys.executable).parent / "conveyor"
WAITING_ELSEWHERE = 7  # K: jobs on a queue that no worker serves
DRAINED_FIRST = 5  # J: jobs the worker runs before Prometheus starts
DRAINED_LATER = 3  # and more while it scrapes: the counter follows


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@dataclass
class Service:
    """A process started by the test, with its log kept for the failure message."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(name: str, args: list[str], log: Path, env: dict[str, str] | None = None) -> Service:
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    return Service(name, process, log)


def wait_for_http(
    service: Service,
    url: str,
    headers: dict[str, str] | None = None,
    timeout: float = 20,
    starting: tuple[int, ...] = (),
) -> int:
    """The status of the first answer from ``url`` other than the ``starting`` ones (Prometheus
    answers 503 while it opens its storage); fails with the service's log if it exits first."""
    deadline = time.monotonic() + timeout
    while True:
        if service.process.poll() is not None:
            pytest.fail(f"{service.name} exited with {service.process.returncode}:\n{service.output()}")
        with contextlib.suppress(httpx.HTTPError):
            status = httpx.get(url, headers=headers, timeout=2).status_code
            if status not in starting:
                return status
        if time.monotonic() > deadline:
            pytest.fail(f"{service.name} did not answer {url} within {timeout} s:\n{service.output()}")
        time.sleep(0.1)


@dataclass
class Fleet:
    api_port: int
    worker_port: int

    @property
    def api_metrics(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/metrics"

    @property
    def worker_metrics(self) -> str:
        return f"http://127.0.0.1:{self.worker_port}/metrics"


@contextlib.contextmanager
def api_and_worker(url: str, queue: str, logs: Path) -> Iterator[Fleet]:
    """``conveyor api`` and ``conveyor worker --metrics-port`` serving ``queue``, both checked to
    serve /metrics before the test goes on: a missing endpoint fails here, saying which."""
    env = {**os.environ, "CONVEYOR_API_TOKENS": f"{TOKENS['read']} read", "PYTHONPATH": str(ROOT)}
    env.pop("CONVEYOR_API_TOKENS_FILE", None)
    fleet = Fleet(free_port(), free_port())
    api = start(
        "conveyor api",
        [str(CONVEYOR), "api", "--url", url, "--port", str(fleet.api_port)],
        logs / "api.log",
        env,
    )
    worker = start(
        "conveyor worker",
        [
            str(CONVEYOR), "worker", "tests.apps.recovery:tasks", "--url", url, "--log-level", "warning",
            "--metrics-port", str(fleet.worker_port), "--shutdown-grace", "2",
        ],
        logs / "worker.log",
        {**env, "TEST_QUEUE": queue},
    )  # fmt: skip
    try:
        status = wait_for_http(api, fleet.api_metrics, headers=bearer())
        assert status == 200, f"conveyor api answers {status} at /metrics (the endpoint is missing?)"
        status = wait_for_http(worker, fleet.worker_metrics)
        assert status == 200, f"the worker answers {status} at /metrics on its --metrics-port"
        yield fleet
    finally:
        worker.stop()
        api.stop()


def bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS['read']}"}


class Prometheus:
    """Debian's Prometheus on a free loopback port, scraping the fleet every second."""

    def __init__(self, binary: str, directory: Path, fleet: Fleet) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        scrape = {"scrape_interval": "1s", "scrape_timeout": "1s"}
        config = {
            "global": {**scrape, "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": "conveyor",
                    "authorization": {"credentials": TOKENS["read"]},
                    "static_configs": [{"targets": [f"127.0.0.1:{fleet.api_port}"]}],
                },
                {
                    "job_name": "conveyor-worker",
                    "static_configs": [{"targets": [f"127.0.0.1:{fleet.worker_port}"]}],
                },
            ],
        }
        path = directory / "prometheus.yml"
        path.write_text(json.dumps(config))  # JSON is YAML
        self.service = start(
            "prometheus",
            [
                binary, f"--config.file={path}", f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn",
            ],
            directory / "prometheus.log",
        )  # fmt: skip

    def __enter__(self) -> Prometheus:
        try:
            status = wait_for_http(self.service, f"{self.base}/-/ready", starting=(503,))
            assert status == 200, f"prometheus is not ready ({status})"
        except BaseException:
            self.service.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.service.stop()

    def query(self, promql: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.base}/api/v1/query", params={"query": promql}, timeout=5)
        assert answer.status_code == 200, answer.text
        result: list[dict[str, Any]] = answer.json()["data"]["result"]
        return result

    def value(self, promql: str) -> float | None:
        result = self.query(promql)
        assert len(result) <= 1, f"{promql} gave {len(result)} series: {result}"
        return float(result[0]["value"][1]) if result else None

    def wait_for_value(self, promql: str, expected: float, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while (got := self.value(promql)) != expected:
            if time.monotonic() > deadline:
                pytest.fail(f"{promql} is {got}, not {expected}; targets: {self.targets()}")
            time.sleep(0.2)

    def targets(self) -> list[dict[str, Any]]:
        """Each target's health and last scrape error: why a series is missing."""
        answer = httpx.get(f"{self.base}/api/v1/targets", timeout=5).json()
        return [
            {key: target[key] for key in ("scrapeUrl", "health", "lastError")}
            for target in answer["data"]["activeTargets"]
        ]


def noop_task(queue: str) -> Any:
    """A task named like tests.apps.recovery's ``noop``, enqueued on ``queue``."""
    tasks = Tasks(queue=queue)

    @tasks.task
    async def noop() -> None: ...

    return noop


def test_prometheus_scrapes_the_api_and_a_worker(
    prometheus_binary: str, client: Client, url: str, queue: str, tmp_path: Path
) -> None:
    unserved = f"{queue}-unserved"
    client.enqueue_many([noop_task(unserved).call() for _ in range(WAITING_ELSEWHERE)])
    noop = noop_task(queue)
    client.enqueue_many([noop.call() for _ in range(DRAINED_FIRST)])
    with api_and_worker(url, queue, tmp_path) as fleet:
        wait_for(
            lambda: client.counts(queue)["completed"] == DRAINED_FIRST, 20, "the worker to drain the queue"
        )
        with Prometheus(prometheus_binary, tmp_path, fleet) as prometheus:
            prometheus.wait_for_value('up{job="conveyor"}', 1)
            prometheus.wait_for_value('up{job="conveyor-worker"}', 1)
            prometheus.wait_for_value(
                f'conveyor_queue_jobs{{queue="{unserved}", state="waiting"}}', WAITING_ELSEWHERE
            )
            prometheus.wait_for_value(f'conveyor_queue_jobs{{queue="{queue}", state="waiting"}}', 0)
            prometheus.wait_for_value(
                f'sum(conveyor_worker_jobs_completed_total{{queue="{queue}"}})', DRAINED_FIRST
            )
            prometheus.wait_for_value(
                f'conveyor_queue_jobs_completed_total{{queue="{queue}"}}', DRAINED_FIRST
            )

            client.enqueue_many([noop.call() for _ in range(DRAINED_LATER)])
            total = DRAINED_FIRST + DRAINED_LATER
            prometheus.wait_for_value(f'sum(conveyor_worker_jobs_completed_total{{queue="{queue}"}})', total)
            prometheus.wait_for_value(f'conveyor_queue_jobs_completed_total{{queue="{queue}"}}', total)
            # The queue nobody serves is untouched, and the worker ran none of its jobs.
            assert (
                prometheus.value(f'conveyor_queue_jobs{{queue="{unserved}", state="waiting"}}')
                == WAITING_ELSEWHERE
            )
            assert prometheus.value(f'conveyor_worker_jobs_completed_total{{queue="{unserved}"}}') is None


def test_both_expositions_pass_promtool_lint(
    promtool: str, client: Client, url: str, queue: str, tmp_path: Path
) -> None:
    """promtool's linter on what the API and the worker really serve, after a job ran (so the
    counters and histograms have samples): metric names, suffixes, HELP and TYPE lines."""
    client.enqueue(noop_task(queue))
    with api_and_worker(url, queue, tmp_path) as fleet:
        wait_for(lambda: client.counts(queue)["completed"] == 1, 20, "the worker to run the job")
        problems = []
        for target, headers in ((fleet.api_metrics, bearer()), (fleet.worker_metrics, None)):
            answer = httpx.get(target, headers=headers, timeout=5)
            assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
            assert "conveyor_" in answer.text
            lint = subprocess.run(
                [promtool, "check", "metrics"],
                input=answer.text,
                capture_output=True,
                text=True,
                timeout=30,
            )
            if lint.returncode != 0 or lint.stdout.strip():
                problems.append(f"{target}:\n{lint.stdout}{lint.stderr}")
        assert not problems, "\n".join(problems)

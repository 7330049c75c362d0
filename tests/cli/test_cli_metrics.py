"""``conveyor metrics``: the standalone exporter, run as a user would, scraped over HTTP."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import httpx

from conveyor import Client, Tasks

from api_helpers import free_port


def test_the_exporter_serves_the_fleet_figures(url: str, client: Client, queue: str) -> None:
    tasks = Tasks(queue=queue)

    @tasks.task
    async def work() -> None: ...

    client.enqueue_many([work.call() for _ in range(3)])
    port = free_port()
    exporter = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "metrics", "--url", url, "--port", str(port), "-Q", queue],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
                break
            except httpx.TransportError:
                assert exporter.poll() is None, exporter.communicate()
                assert time.monotonic() < deadline, "the exporter did not start"
                time.sleep(0.1)
        assert response.status_code == 200
        assert f'conveyor_queue_jobs{{queue="{queue}",state="waiting"}} 3' in response.text
        assert "conveyor_redis_up 1" in response.text
        other = [line for line in response.text.splitlines() if "queue=" in line and queue not in line]
        assert other == [], "only the queues asked for"
        assert httpx.get(f"http://127.0.0.1:{port}/livez", timeout=5).status_code == 200
    finally:
        exporter.send_signal(signal.SIGTERM)
        out, err = exporter.communicate(timeout=10)
    assert exporter.returncode == 0, err
    assert f"http://127.0.0.1:{port}/metrics" in out


def test_a_taken_port_is_a_clear_error(url: str) -> None:
    port = free_port()
    with socket.create_server(("127.0.0.1", port)):
        done = subprocess.run(
            [sys.executable, "-m", "conveyor", "metrics", "--url", url, "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 1
    assert f"cannot serve metrics on 127.0.0.1:{port}" in done.stderr

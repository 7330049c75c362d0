"""Benchmark of the HTTP API and of HTTP-call jobs (not part of make test).

    .venv/bin/python bench/api_bench.py [--seconds 10] [--connections 16] [--calls 20000]

Starts its own Redis (the embedded server) unless --redis-url is given, then measures:

1. single enqueues over HTTP: ``wrk`` POSTing one job per request to one ``conveyor api``
   process on loopback (``apt-get install wrk``);
2. bulk enqueues over HTTP: 10,000 jobs per request, two requests in flight;
3. HTTP-call jobs: one worker process (``conveyor worker``) calling a local HTTP server
   (a separate process answering 200 with keep-alive).

Prints one JSON line per scenario. Run on an otherwise idle machine: wrk, the API, Redis
and the target server all share its cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TOKEN = "bench-token-for-the-api"

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"task": "bench.noop", "args": [1, 2, {"k": "v"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer TOKEN"
""".replace("TOKEN", TOKEN)

TARGET_SERVER = r"""
import asyncio, sys
try:
    import uvloop
    uvloop.install()
except ImportError:
    pass

RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}"

class Http(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buffer = b""

    def data_received(self, data):
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            length = 0
            for line in head.split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length:]
            self.transport.write(RESPONSE)

async def main():
    server = await asyncio.get_running_loop().create_server(Http, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    print("ready", flush=True)
    await server.serve_forever()

asyncio.run(main())
"""

WORKER_APP = """
from conveyor import Tasks
from conveyor.httpcall import HttpCallSettings, register_http_task

tasks = Tasks(queue="bench-http")
register_http_task(tasks, HttpCallSettings(allow_networks=("127.0.0.1/32",)))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def start_api(redis_url: str, port: int, processes: int = 1) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CONVEYOR_API_TOKENS": f"{TOKEN} read enqueue admin",
        "CONVEYOR_REDIS_URL": redis_url,
    }
    process = subprocess.Popen(
        [
            str(BIN / "conveyor"),
            "api",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--processes",
            str(processes),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    wait_http(f"http://127.0.0.1:{port}/readyz")
    return process


def bench_single(base: str, seconds: int, connections: int, threads: int) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    if wrk is None:
        return {"scenario": "http-enqueue-single", "error": "wrk not found (apt-get install wrk)"}
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT)
    url = f"{base}/v1/queues/bench-single/jobs"
    subprocess.run(
        [wrk, "-t1", "-c8", "-d2s", "-s", script.name, url], capture_output=True, check=True
    )  # warm-up
    out = subprocess.run(
        [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script.name, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(script.name)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    p50 = re.search(r"50%\s+(\S+)", out)
    p99 = re.search(r"99%\s+(\S+)", out)
    return {
        "scenario": "http-enqueue-single",
        "requests_per_s": rate,
        "connections": connections,
        "seconds": seconds,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": errors.group(1) if errors else None,
        "latency_p50": p50.group(1) if p50 else None,
        "latency_p99": p99.group(1) if p99 else None,
    }


async def bench_bulk(base: str, total: int, batch: int, in_flight: int) -> dict[str, Any]:
    body = orjson.dumps({"jobs": [{"task": "bench.noop", "args": [i, {"k": "v"}]} for i in range(batch)]})
    requests = total // batch
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as client:
        warm = await client.post("/v1/queues/bench-bulk/jobs/bulk", content=body)
        warm.raise_for_status()
        queue = asyncio.Queue[int]()
        for i in range(requests):
            queue.put_nowait(i)
        created = 0

        async def sender() -> None:
            nonlocal created
            while not queue.empty():
                queue.get_nowait()
                response = await client.post("/v1/queues/bench-bulk/jobs/bulk", content=body)
                response.raise_for_status()
                created += response.json()["created"]

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(in_flight)))
        elapsed = time.perf_counter() - started
    return {
        "scenario": "http-enqueue-bulk",
        "jobs_per_s": round(created / elapsed),
        "jobs": created,
        "batch": batch,
        "in_flight": in_flight,
        "seconds": round(elapsed, 2),
    }


def bench_http_calls(redis_url: str, calls: int, concurrency: int) -> dict[str, Any]:
    from conveyor import Client
    from conveyor.httpcall import HTTP_CALL

    port = free_port()
    target = subprocess.Popen(
        [sys.executable, "-c", TARGET_SERVER, str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert target.stdout is not None
    target.stdout.readline()
    workdir = Path(tempfile.mkdtemp())
    (workdir / "bench_http_app.py").write_text(WORKER_APP)
    worker: subprocess.Popen[bytes] | None = None
    try:
        with Client.from_url(redis_url) as client:
            client.purge("bench-http", ["waiting", "completed", "failed"])
            call = HTTP_CALL.with_options(queue="bench-http")
            url = f"http://127.0.0.1:{port}/hook"
            for start in range(0, calls, 10_000):
                client.enqueue_many(
                    [
                        call.call(url=url, method="POST", json={"i": i})
                        for i in range(start, min(calls, start + 10_000))
                    ]
                )
            env = {**os.environ, "PYTHONPATH": str(workdir), "CONVEYOR_REDIS_URL": redis_url}
            worker = subprocess.Popen(
                [str(BIN / "conveyor"), "worker", "bench_http_app:tasks", "--concurrency", str(concurrency)],
                env=env,
                cwd=workdir,
                stdout=subprocess.DEVNULL,
                stderr=open(workdir / "worker.log", "wb"),  # noqa: SIM115 -- closed with the process
            )
            first = None
            deadline = time.monotonic() + 600
            shown = time.monotonic()
            while time.monotonic() < deadline:
                counts = client.counts("bench-http")
                if time.monotonic() - shown > 5:
                    print(f"  ... {counts}", file=sys.stderr, flush=True)
                    shown = time.monotonic()
                if first is None and (counts["active"] or counts["completed"]):
                    first = time.perf_counter()
                # Completed jobs beyond the worker's retention (10,000) are trimmed: done is
                # when nothing is left to run.
                if first is not None and not (counts["waiting"] or counts["active"] or counts["delayed"]):
                    break
                time.sleep(0.01)
            elapsed = time.perf_counter() - (first or time.perf_counter())
            counts = client.counts("bench-http")
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
        target.kill()
        target.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "scenario": "http-call-jobs",
        "calls_per_s": round((calls - counts["failed"]) / elapsed) if elapsed else None,
        "calls": calls,
        "failed": counts["failed"],
        "concurrency": concurrency,
        "seconds": round(elapsed, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (they share the cores)")
    parser.add_argument("--bulk-jobs", type=int, default=200_000)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--call-concurrency", type=int, default=500)
    parser.add_argument("--api-processes", type=int, default=1, help="conveyor api --processes")
    parser.add_argument("--only", choices=["single", "bulk", "calls"], action="append")
    args = parser.parse_args()
    only = set(args.only or ["single", "bulk", "calls"])

    server = None
    redis_url = args.redis_url
    if redis_url is None:
        from conveyor.dev.server import RedisServer

        server = RedisServer(appendonly=False).start()
        redis_url = server.url
    port = free_port()
    api = start_api(redis_url, port, args.api_processes) if only & {"single", "bulk"} else None
    base = f"http://127.0.0.1:{port}"
    try:
        if "single" in only:
            print(json.dumps(bench_single(base, args.seconds, args.connections, args.threads)), flush=True)
        if "bulk" in only:
            print(json.dumps(asyncio.run(bench_bulk(base, args.bulk_jobs, 10_000, 2))), flush=True)
        if "calls" in only:
            print(json.dumps(bench_http_calls(redis_url, args.calls, args.call_concurrency)), flush=True)
    finally:
        if api is not None:
            api.send_signal(signal.SIGTERM)
            api.wait(30)
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()

"""The HTTP server under the API, as ``conveyor api`` runs it: request heads are capped.

Nothing in uvicorn or httptools limited a request's head: one 64 MiB header line was read
whole (and copied chunk by chunk) before the API answered 401, taking the process from 76 to
207 MiB. Now a head over 32 KiB, or with more than 100 fields, gets 431 while it is still
arriving, and the connection is closed. Raw sockets, since an HTTP client will not send such
requests.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from conveyor.api import create_app
from conveyor.api.server import MAX_HEAD_BYTES, MAX_HEADERS, uvicorn_options
from conveyor.dev.server import RedisServer

from api_helpers import TOKEN_LINES, TOKENS, ThreadedUvicorn, api_settings, free_port, wait_until_healthy

MiB = 1024 * 1024


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def _read_answer(sock: socket.socket, timeout: float) -> bytes:
    """What the server sent until it closed the connection or went quiet for ``timeout``."""
    got = b""
    while select.select([sock], [], [], timeout)[0]:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        got += chunk
    return got


def send_huge_header(port: int, size: int = MiB, piece: int = 16 * 1024) -> tuple[bytes, int]:
    """Send a request whose one header is ``size`` bytes, a piece at a time, stopping as soon
    as the server answers; returns the answer and how many header bytes were sent by then."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /v1/queues HTTP/1.1\r\nHost: localhost\r\nX-Huge: ")
        sent = 0
        answer = b""
        try:
            while sent < size:
                sock.sendall(b"a" * piece)
                sent += piece
                if select.select([sock], [], [], 0.01)[0]:
                    answer = _read_answer(sock, 1.0)
                    break
            else:
                answer = _read_answer(sock, 2.0)  # the head is still open: nothing is due yet
                if not answer:
                    sock.sendall(b"\r\n\r\n")
                    answer = _read_answer(sock, 5.0)
        except (BrokenPipeError, ConnectionResetError):  # closed on us: read what it said
            answer = answer or _read_answer(sock, 1.0)
        return answer, sent


def send_raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # refused midway
            sock.sendall(request)
        return _read_answer(sock, 5.0)


def _request(
    headers: list[tuple[str, str]], method: str = "GET", path: str = "/v1/queues", close: bool = True
) -> bytes:
    """A request's head; ``close`` asks the server to close the connection after answering."""
    framing = ["Connection: close"] if close else []
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", *framing, *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.fixture(scope="module")
def api(server_url: str) -> Iterator[ThreadedUvicorn]:
    """The app on the HTTP implementation and options ``conveyor api`` uses."""
    server = ThreadedUvicorn(create_app(api_settings(server_url)), **uvicorn_options()).start()
    yield server
    server.stop()


@pytest.mark.parametrize("processes", [1, 2])
def test_conveyor_api_refuses_a_huge_header_before_reading_it(
    redis_server: RedisServer, processes: int
) -> None:
    port = free_port()
    env = {**os.environ, "CONVEYOR_API_TOKENS": ";".join(TOKEN_LINES)}
    env.pop("CONVEYOR_API_TOKENS_FILE", None)
    conveyor = Path(sys.executable).parent / "conveyor"
    process = subprocess.Popen(
        [str(conveyor), "api", "--url", redis_server.url, "--port", str(port), "--processes", str(processes)],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_healthy(port, process)
        answer, sent = send_huge_header(port)
        assert _status(answer) == 431, answer[:300]
        assert sent < MiB, "answered only once the whole header was in"
        body = orjson.loads(answer.split(b"\r\n\r\n", 1)[1])
        assert body["status"] == 431 and "32,768 bytes" in body["detail"]
        assert b"connection: close" in answer.lower()
        ok = httpx.get(
            f"http://127.0.0.1:{port}/v1/queues",
            headers={"Authorization": f"Bearer {TOKENS['read']}"},
            timeout=5,
        )
        assert ok.status_code == 200, "the server goes on serving"
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_a_head_over_the_cap_in_one_piece_is_431(api: ThreadedUvicorn) -> None:
    """A head that arrives whole is measured exactly: just over the cap is refused, a head
    of ordinary size is served."""
    over = _request([("X-Big", "a" * MAX_HEAD_BYTES)])
    assert _status(send_raw(api.port, over)) == 431
    spread = _request([(f"X-Part-{i}", "b" * 1000) for i in range(40)])  # 40 KB over 40 fields
    assert _status(send_raw(api.port, spread)) == 431
    fine = _request([("Authorization", f"Bearer {TOKENS['read']}"), ("X-Some", "c" * 8000)])
    assert _status(send_raw(api.port, fine)) == 200


def test_too_many_header_fields_is_431(api: ThreadedUvicorn) -> None:
    auth = ("Authorization", f"Bearer {TOKENS['read']}")
    many = _request([auth] + [(f"X-H{i}", "1") for i in range(MAX_HEADERS)])
    answer = send_raw(api.port, many)
    assert _status(answer) == 431 and b"header fields" in answer
    enough = _request([auth] + [(f"X-H{i}", "1") for i in range(MAX_HEADERS - 3)])  # + Host, Connection
    assert _status(send_raw(api.port, enough)) == 200


def test_large_bodies_and_pipelined_requests_are_not_taken_for_heads(
    api: ThreadedUvicorn, queue: str
) -> None:
    """Bytes of a body are never counted as head, even when a body and the next request's
    head arrive in one read."""
    jobs = orjson.dumps({"jobs": [{"task": "t", "args": ["x" * 1000]} for _ in range(300)]})
    assert len(jobs) > 8 * MAX_HEAD_BYTES
    post = _request(
        [
            ("Authorization", f"Bearer {TOKENS['admin']}"),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(jobs))),
        ],
        "POST",
        f"/v1/queues/{queue}/jobs/bulk",
        close=False,
    )[:-2]  # the blank line comes with the body
    auth = ("Authorization", f"Bearer {TOKENS['read']}")
    path = f"/v1/queues/{queue}"
    get = _request([auth], path=path, close=False)
    answer = send_raw(api.port, post + b"\r\n" + jobs + get + _request([auth], path=path, close=True))
    statuses = [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]
    assert statuses == [201, 200, 200], answer[:500]


def test_without_httptools_h11_caps_the_head(server_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where httptools is missing uvicorn runs h11, whose own limit on an unfinished event
    is set to the same cap (h11 answers it with 400, not 431)."""
    monkeypatch.setitem(sys.modules, "conveyor.api.protocol", None)  # importing it fails
    options = uvicorn_options()
    assert options == {"http": "h11", "h11_max_incomplete_event_size": MAX_HEAD_BYTES}
    server = ThreadedUvicorn(create_app(api_settings(server_url)), **options).start()
    try:
        answer, sent = send_huge_header(server.port)
        assert _status(answer) == 400 and sent < MiB
    finally:
        server.stop()

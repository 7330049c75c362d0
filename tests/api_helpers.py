"""Helpers of the API tests: a real uvicorn server in a thread, and a small raw HTTP server.

The raw server is written on asyncio streams, not a framework, so that tests can make it
misbehave the ways real services do: answer slowly, fail with 5xx, rate-limit with
Retry-After, or reset the connection mid-request.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn

from conveyor.api import ApiSettings, TokenStore, create_app

TOKENS = {  # at least 16 characters, as the server requires
    "admin": "test-token-admin",
    "read": "test-token-read-only",
    "enqueue": "test-token-enqueue",
    "read_enqueue": "test-token-read-enqueue",
}
TOKEN_LINES = [
    f"{TOKENS['admin']} admin",
    f"{TOKENS['read']} read",
    f"{TOKENS['enqueue']} enqueue",
    f"{TOKENS['read_enqueue']} read enqueue",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThreadedUvicorn:
    """The real app served by uvicorn on a free loopback port, in a background thread.
    ``options`` go to uvicorn: ``**uvicorn_options()`` serves it as ``conveyor api`` does."""

    def __init__(self, app: Any, **options: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            loop="asyncio",
            ws="none",
            lifespan="on",
            log_level="warning",
            access_log=False,
            **{"http": "h11", **options},
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ThreadedUvicorn:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def api_settings(redis_url: str, **overrides: Any) -> ApiSettings:
    return ApiSettings(redis_url=redis_url, tokens=TokenStore.parse(TOKEN_LINES), **overrides)


def start_api(redis_url: str, **overrides: Any) -> ThreadedUvicorn:
    return ThreadedUvicorn(create_app(api_settings(redis_url, **overrides))).start()


def auth(scope: str = "admin") -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[scope]}"}


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Handler = Callable[[Received, int], Awaitable[tuple[int, dict[str, str], bytes] | None]]


@dataclass
class RawHttpServer:
    """Answers each path with a handler given the request and how many times the path was hit.

    A handler returning None resets the connection (the client sees a connection error).
    """

    handlers: dict[str, Handler] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    port: int = 0
    tls: ssl.SSLContext | None = None
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    async def __aenter__(self) -> RawHttpServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                method, path, _ = line.decode().split(" ", 2)
                headers: dict[str, str] = {}
                while (raw := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = raw.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                request = Received(method, path, headers, body)
                self.received.append(request)
                count = self.hits[path] = self.hits.get(path, 0) + 1
                handler = self.handlers.get(path)
                answer = await handler(request, count) if handler else (404, {}, b"no such path")
                if answer is None:
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    writer.transport.abort()
                    return
                status, extra, payload = answer
                head = f"HTTP/1.1 {status} X\r\ncontent-length: {len(payload)}\r\n"
                head += "".join(f"{k}: {v}\r\n" for k, v in extra.items())
                writer.write(head.encode() + b"\r\n" + payload)
                await writer.drain()
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client left, or the server is closing: nothing to answer
        finally:
            writer.close()


def problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["detail"] and body["title"]
    assert "Traceback" not in response.text and "redis://" not in response.text
    return body


def wait_until_healthy(port: int, process: subprocess.Popen[Any], timeout: float = 20) -> None:
    """Wait for a ``conveyor api`` process on ``port`` to answer ``/healthz``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline and process.poll() is None, "the API did not come up"
        time.sleep(0.05)

"""A tiny HTTP server for ``GET /metrics`` and ``GET /livez``, on an event loop in a thread of
its own.

Its own thread, not the worker's event loop: ``/livez`` must be able to answer 503 when that
loop is stuck (a loop that cannot answer at all makes a liveness probe time out, and tells
nobody why), and the supervisor of ``--processes N``, which has no event loop, runs the same
server. It idles in ``epoll`` between scrapes and takes the GIL only to answer one.

HTTP/1.1 just far enough for Prometheus, a kubelet and curl: one request per connection
(``Connection: close``), GET and HEAD, the request line and headers read within
``REQUEST_TIMEOUT`` and ``MAX_HEAD`` bytes, no body. No dependency, no framework.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

from .exposition import CONTENT_TYPE

log = logging.getLogger("conveyor.metrics")

REQUEST_TIMEOUT = 5.0
"""Seconds a client gets to send its request line and headers."""
MAX_HEAD = 16 * 1024
"""Bytes of request line and headers accepted."""

Health = Callable[[], tuple[bool, dict[str, Any]]]
"""Returns whether the process is alive and a few figures saying why (the JSON body)."""

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
_REASONS |= {500: "Internal Server Error", 503: "Service Unavailable"}


class PortUnavailable(OSError):
    """The metrics port cannot be listened on (taken already, or the host is not ours)."""


class MetricsServer:
    """Serves ``metrics()`` (Prometheus text) at ``/metrics`` and ``health()`` at ``/livez``
    on ``host:port`` (port 0: any free port; see :attr:`port`) from :meth:`start` to :meth:`stop`.
    Both functions run in the server's thread."""

    def __init__(self, host: str, port: int, *, metrics: Callable[[], str], health: Health) -> None:
        self.host = host
        self.requested_port = port
        self.metrics = metrics
        self.health = health
        self.port = 0
        """The port it listens on, once started."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None

    def start(self) -> None:
        """Listen, then serve from a thread. Binding happens here, in the caller's thread, so a
        port taken already fails the caller at once (:class:`PortUnavailable`)."""
        try:
            sock = socket.create_server((self.host, self.requested_port))
        except OSError as exc:
            raise PortUnavailable(
                exc.errno, f"cannot serve metrics on {self.host}:{self.requested_port}: {exc.strerror}"
            ) from exc
        self.port = sock.getsockname()[1]
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(sock, ready), name="conveyor-metrics-http", daemon=True
        )
        self._thread.start()
        ready.wait(10)
        log.info("metrics on http://%s:%d/metrics (liveness: /livez)", self.host, self.port)

    def stop(self, timeout: float = 5.0) -> None:
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None:
            with contextlib.suppress(RuntimeError):  # its loop closed already
                loop.call_soon_threadsafe(stopped.set)
        if self._thread is not None:
            self._thread.join(timeout)

    # ------------------------------------------------------------------ in the thread
    def _run(self, sock: socket.socket, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve(loop, sock, ready))
        finally:
            ready.set()  # also when it failed to start: the caller must not wait for nothing
            loop.close()

    async def _serve(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, ready: threading.Event
    ) -> None:
        self._stopped = asyncio.Event()
        try:
            server = await asyncio.start_server(self._handle, sock=sock, limit=MAX_HEAD)
        except BaseException:
            sock.close()
            raise
        self._loop = loop
        ready.set()
        try:
            await self._stopped.wait()
        finally:
            server.close()
            await server.wait_closed()
            # Requests under way end with the server; each closes its connection as it ends.
            pending = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            status, content_type, body, head_only = self._answer(head)
            reason = _REASONS.get(status, "")
            headers = (
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n"
            )
            if status == 405:
                headers += "Allow: GET, HEAD\r\n"
            writer.write(headers.encode("latin-1") + b"\r\n" + (b"" if head_only else body))
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a client that went away or sent too much or too slowly: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    def _answer(self, head: bytes) -> tuple[int, str, bytes, bool]:
        """Status, content type, body and whether to leave the body out (HEAD)."""
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return 400, "text/plain; charset=utf-8", b"bad request\n", False
        method, target, _ = parts
        head_only = method == "HEAD"
        if method not in ("GET", "HEAD"):
            return 405, "text/plain; charset=utf-8", b"only GET and HEAD\n", False
        path = target.split("?", 1)[0]
        try:
            if path == "/metrics":
                return 200, CONTENT_TYPE, self.metrics().encode(), head_only
            if path == "/livez":
                healthy, details = self.health()
                body = json.dumps(details, separators=(",", ":")).encode() + b"\n"
                return (200 if healthy else 503), "application/json", body, head_only
        except Exception:  # a bug in a figure must not take the server down with it
            log.exception("answering %s failed", path)
            return 500, "text/plain; charset=utf-8", b"internal error\n", head_only
        return 404, "text/plain; charset=utf-8", b"not found: try /metrics or /livez\n", head_only

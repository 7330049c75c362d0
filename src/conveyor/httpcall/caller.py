"""The HTTP-call task itself: one pooled aiohttp session per worker process, and its registration."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import Any

import aiohttp

from .. import serialization
from ..context import current_job
from ..errors import Fail, RetryAfter
from ..task import Task, TaskDefaults, Tasks
from .outbound import CheckingResolver, OutboundPolicy, OutboundRefused, _refusal
from .request import DEFAULT_TIMEOUT, HttpRequest, parse_request, retry_after_seconds
from .settings import HttpCallSettings
from .signing import SIGNATURE_HEADER, sign

log = logging.getLogger("conveyor.httpcall")

HTTP_TASK = "conveyor.http"
"""The task name of HTTP-call jobs."""
USER_AGENT = "conveyor-httpcall"


class HttpCallError(Exception):
    """A failure worth retrying: connection error, timeout, 5xx."""


class HttpCaller:
    """Makes the calls of HTTP-call jobs for one worker process, over one pooled client."""

    def __init__(self, settings: HttpCallSettings | None = None) -> None:
        self.settings = settings or HttpCallSettings.from_env()
        self.policy = OutboundPolicy(self.settings)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def session(self) -> aiohttp.ClientSession:
        """The shared session of the running event loop (made on first use)."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop:
            tls = ssl.create_default_context(cafile=self.settings.ca_file) if self.settings.ca_file else True
            connector = aiohttp.TCPConnector(
                limit=self.settings.max_connections,
                resolver=CheckingResolver(self.policy),
                ttl_dns_cache=10,
                ssl=tls,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers={"User-Agent": USER_AGENT},
                auto_decompress=True,
                trust_env=False,
            )
            self._loop = loop
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, request: HttpRequest) -> dict[str, Any]:
        """Make one call; returns the result or raises (``HttpCallError`` to retry,
        ``RetryAfter`` to come back later, ``Fail`` to fail at once)."""
        self.policy.check_url(request.url)
        headers = dict(request.headers)
        data = request.body.encode() if request.body is not None else None
        if request.json is not None:
            data = serialization.dumps(request.json)
            if not any(k.lower() == "content-type" for k in headers):
                headers["Content-Type"] = "application/json"
        started = time.perf_counter()
        what = f"{request.method} {request.url}"
        try:
            async with (
                asyncio.timeout(request.timeout),
                self.session().request(
                    request.method,
                    request.url,
                    headers=headers,
                    data=data,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=request.timeout),
                ) as response,
            ):
                body, truncated = await self._read_capped(response)
        except TimeoutError:
            raise HttpCallError(f"{what}: no response within {request.timeout:g} s") from None
        except aiohttp.ClientError as exc:
            refused = _refusal(exc)
            if refused is not None:
                raise refused from None
            raise HttpCallError(f"{what}: {type(exc).__name__}: {_reason(exc)}") from None
        status = response.status
        result = {
            "status": status,
            "headers": {
                k.lower(): v for k, v in response.headers.items() if k.lower() in self.settings.keep_headers
            },
            "body": body.decode("utf-8", errors="replace"),
            "truncated": truncated,
            "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
        }
        ok = status in request.success if request.success else 200 <= status < 300
        if ok:
            return result
        what = f"{what} answered {status}"
        if status in (429, 503):
            delay = retry_after_seconds(response.headers.get("retry-after"))
            if delay is not None:
                raise RetryAfter(delay, f"{what} with Retry-After {delay:g} s")
        if status >= 500 or status in (408, 429):
            raise HttpCallError(what)
        raise Fail(f"{what}; not retried (4xx other than 408/429, or an unexpected status)")

    async def _read_capped(self, response: aiohttp.ClientResponse) -> tuple[bytes, bool]:
        cap = self.settings.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        while size <= cap:
            chunk = await response.content.read(cap + 1 - size)
            if not chunk:
                return b"".join(chunks), False
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)[:cap], True

    async def callback(self, url: str, outcome: dict[str, Any]) -> None:
        """POST the job's outcome to its callback URL (best effort: 3 tries, then logged)."""
        body = serialization.dumps(outcome)
        for attempt in range(3):
            headers = {"Content-Type": "application/json"}
            if self.settings.callback_secret:
                headers[SIGNATURE_HEADER] = sign(self.settings.callback_secret, body, int(time.time()))
            try:
                self.policy.check_url(url)
                async with self.session().post(
                    url,
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=30),
                ) as response:
                    await response.read()
                    if response.status < 500:
                        if response.status >= 300:
                            log.warning("callback %s answered %d; not retried", url, response.status)
                        return
            except OutboundRefused as exc:
                log.error("callback %s refused: %s", url, exc)
                return
            except (aiohttp.ClientError, TimeoutError) as exc:
                refused = _refusal(exc)
                if refused is not None:
                    log.error("callback %s refused: %s", url, refused)
                    return
                log.warning("callback %s failed (try %d of 3): %s", url, attempt + 1, _reason(exc))
            await asyncio.sleep(0.5 * 2**attempt)
        log.error("callback %s: gave up after 3 tries", url)

    async def run(self, **kwargs: Any) -> dict[str, Any]:
        """The task function: one attempt of an HTTP-call job."""
        try:
            request = parse_request(kwargs)
        except ValueError as exc:
            raise Fail(f"invalid HTTP call: {exc}") from None
        try:
            result = await self.send(request)
        except RetryAfter:
            raise
        except (Fail, HttpCallError) as exc:
            if request.callback_url and (isinstance(exc, Fail) or _last_attempt()):
                await self.callback(request.callback_url, _outcome("failed", error=str(exc)))
            raise
        if request.callback_url:
            await self.callback(request.callback_url, _outcome("completed", result=result))
        return result


def _last_attempt() -> bool:
    try:
        return current_job().retries_left == 0
    except LookupError:
        return True


def _outcome(state: str, **fields: Any) -> dict[str, Any]:
    try:
        job = current_job()
        who = {"job_id": job.id, "queue": job.queue, "attempt": job.attempt}
    except LookupError:
        who = {}
    return {**who, "state": state, **fields}


async def _describe(
    url: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    json: Any = None,
    body: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    success: list[int] | None = None,
    callback_url: str | None = None,
) -> dict[str, Any]:
    """The signature of HTTP-call jobs, for type-checked enqueues; workers run ``HttpCaller.run``."""
    raise RuntimeError("HTTP-call jobs run on a worker that called register_http_task()")


HTTP_CALL: Task[..., dict[str, Any]] = Task(_describe, HTTP_TASK, TaskDefaults(retries=5))
"""Enqueue HTTP-call jobs with it: ``client.enqueue(HTTP_CALL, url=..., method="POST")``."""


def register_http_task(
    tasks: Tasks, settings: HttpCallSettings | None = None, *, retries: int = 5
) -> HttpCaller:
    """Serve HTTP-call jobs (task ``conveyor.http``) from this registry's workers."""
    caller = HttpCaller(settings)
    tasks.task(name=HTTP_TASK, retries=retries)(caller.run)
    tasks.on_shutdown(caller.aclose)  # its pooled connections, when the worker stops
    return caller


def _reason(exc: BaseException) -> str:
    return str(exc) or "the connection failed or was closed by the peer"

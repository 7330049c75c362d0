"""The built-in HTTP-call task: "call this URL, wait up to 90 seconds, retry on failure".

Workers serve it once it is registered on their task registry::

    tasks = Tasks()
    register_http_task(tasks)            # serves jobs of the task named "conveyor.http"

and anyone enqueues it, from Python or over the HTTP API, by name with keyword arguments::

    client.enqueue(HTTP_CALL.with_options(queue="hooks"), url="https://example.com/hook",
                   method="POST", json={"order": 7}, callback_url="https://me.example/done")

What happens to one call:

* 2xx (or the codes in ``success``) completes the job with the status, selected headers and
  a size-capped body;
* connection errors, timeouts and 5xx are retried with the task's backoff;
* 4xx other than 408 and 429, and 3xx (redirects are not followed), fail the job at once;
* 429 and 503 with ``Retry-After`` come back after that delay without spending an attempt.

Outbound safety: the host is checked against the allow and deny lists, then resolved, and
every address it resolves to must be public (not loopback, private, link-local, the cloud
metadata address, ...) unless a configured network allows it. The request then goes to
the address that was checked (the ``Host`` header and TLS server name keep the original
name), so a DNS answer that changes between the check and the connection cannot steer it
elsewhere.

One ``aiohttp.ClientSession`` with connection pooling serves every HTTP job of a worker process.
(aiohttp rather than httpx: measured on loopback, httpx 0.28 made about 120 calls/s with
500 in flight, aiohttp about 6,000; its pool scans every connection on each request.)
"""

from __future__ import annotations

import asyncio
import email.utils
import fnmatch
import hashlib
import hmac
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from . import serialization
from .context import current_job
from .errors import ConfigurationError
from .execution import Fail, RetryAfter
from .task import Task, TaskDefaults, Tasks

log = logging.getLogger("conveyor.httpcall")

HTTP_TASK = "conveyor.http"
"""The task name of HTTP-call jobs."""
DEFAULT_TIMEOUT = 90.0
MAX_TIMEOUT = 24 * 3600.0
MAX_RETRY_AFTER = 24 * 3600.0
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
DEFAULT_KEEP_HEADERS = ("content-type", "content-length", "location", "etag", "retry-after", "x-request-id")
SIGNATURE_HEADER = "Conveyor-Signature"
USER_AGENT = "conveyor-httpcall"


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(item.strip() for item in (value or "").split(",") if item.strip())


@dataclass(frozen=True, slots=True)
class HttpCallSettings:
    """How a worker makes HTTP calls. Every field can be set as ``CONVEYOR_HTTP_<FIELD>``
    (lists comma-separated)."""

    allow_hosts: tuple[str, ...] = ()
    """When non-empty, only these hosts may be called (``*.example.com`` patterns allowed)."""
    deny_hosts: tuple[str, ...] = ()
    """Hosts never called, even when allowed above."""
    allow_networks: tuple[str, ...] = ()
    """Non-public networks that may be called anyway (``10.0.0.0/8``, ``127.0.0.1/32``)."""
    max_body_bytes: int = 64 * 1024
    """Bytes of the response body kept in the job's result."""
    keep_headers: tuple[str, ...] = DEFAULT_KEEP_HEADERS
    """Response headers kept in the result (lower case)."""
    callback_secret: str | None = None
    """Key of the HMAC-SHA256 signature on completion callbacks; unsigned without one."""
    max_connections: int = 2000
    """Connections the shared client keeps open at most, across all hosts."""

    def __post_init__(self) -> None:
        for network in self.allow_networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ConfigurationError(f"allow_networks: {network!r} is not an IP network") from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> HttpCallSettings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in ("allow_hosts", "deny_hosts", "allow_networks", "keep_headers"):
            raw = env.get(f"CONVEYOR_HTTP_{name.upper()}")
            if raw:
                values[name] = _split(raw.lower() if name == "keep_headers" else raw)
        for name in ("max_body_bytes", "max_connections"):
            raw = env.get(f"CONVEYOR_HTTP_{name.upper()}")
            if raw:
                try:
                    values[name] = int(raw)
                except ValueError:
                    raise ConfigurationError(f"CONVEYOR_HTTP_{name.upper()} must be an integer") from None
        if env.get("CONVEYOR_HTTP_CALLBACK_SECRET"):
            values["callback_secret"] = env["CONVEYOR_HTTP_CALLBACK_SECRET"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


class OutboundRefused(Fail):
    """The URL's host is denied, or resolves to an address that is not allowed."""


class HttpCallError(Exception):
    """A failure worth retrying: connection error, timeout, 5xx."""


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One validated HTTP-call job: what the worker will send."""

    url: str
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    json: Any = None
    body: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    success: tuple[int, ...] = ()
    callback_url: str | None = None


def parse_request(kwargs: Mapping[str, Any]) -> HttpRequest:
    """Validate the keyword arguments of an HTTP-call job; ``ValueError`` names the field."""
    known = {"url", "method", "headers", "json", "body", "timeout", "success", "callback_url"}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown field of an HTTP call (known: {', '.join(sorted(known))})")
    url = kwargs.get("url")
    if not isinstance(url, str):
        raise ValueError("url: required, an http:// or https:// URL")
    _check_url(url, "url")
    method = kwargs.get("method", "GET")
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise ValueError(f"method: must be one of {', '.join(METHODS)}")
    headers = kwargs.get("headers") or {}
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and k and "\n" not in k + v and "\r" not in k + v
        for k, v in headers.items()
    ):
        raise ValueError("headers: must be an object of header names to string values")
    body = kwargs.get("body")
    if body is not None and not isinstance(body, str):
        raise ValueError("body: must be a string (use json for a JSON body)")
    if body is not None and kwargs.get("json") is not None:
        raise ValueError("body: give either json or body, not both")
    timeout = kwargs.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= MAX_TIMEOUT:
        raise ValueError(f"timeout: must be a number of seconds above 0 and at most {MAX_TIMEOUT:g}")
    success = kwargs.get("success") or ()
    if not isinstance(success, list | tuple) or not all(
        isinstance(code, int) and not isinstance(code, bool) and 100 <= code <= 599 for code in success
    ):
        raise ValueError("success: must be a list of HTTP status codes (100-599)")
    callback = kwargs.get("callback_url")
    if callback is not None:
        if not isinstance(callback, str):
            raise ValueError("callback_url: must be an http:// or https:// URL")
        _check_url(callback, "callback_url")
    return HttpRequest(
        url=url,
        method=method.upper(),
        headers=dict(headers),
        json=kwargs.get("json"),
        body=body,
        timeout=float(timeout),
        success=tuple(success),
        callback_url=callback,
    )


def _check_url(url: str, name: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{name}: must be an absolute http:// or https:// URL, got {url[:200]!r}")
    if parts.username or parts.password:
        raise ValueError(f"{name}: credentials in the URL are not accepted; send an Authorization header")


def _matches(host: str, patterns: Sequence[str]) -> bool:
    host = host.lower().rstrip(".")
    return any(fnmatch.fnmatchcase(host, pattern.lower().rstrip(".")) for pattern in patterns)


class OutboundPolicy:
    """The allow/deny host lists and the address check, applied after DNS resolution."""

    def __init__(self, settings: HttpCallSettings) -> None:
        self.settings = settings
        self._networks = [ipaddress.ip_network(n, strict=False) for n in settings.allow_networks]

    def check_host(self, host: str) -> None:
        if _matches(host, self.settings.deny_hosts):
            raise OutboundRefused(f"host {host!r} is on the deny list (CONVEYOR_HTTP_DENY_HOSTS)")
        if self.settings.allow_hosts and not _matches(host, self.settings.allow_hosts):
            raise OutboundRefused(f"host {host!r} is not on the allow list (CONVEYOR_HTTP_ALLOW_HOSTS)")

    def check_address(self, host: str, address: str) -> None:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in network for network in self._networks):
            return
        if not ip.is_global or ip.is_multicast:
            kind = (
                "loopback"
                if ip.is_loopback
                else "link-local (cloud metadata)"
                if ip.is_link_local
                else "private or reserved"
            )
            raise OutboundRefused(
                f"host {host!r} resolves to {ip}, a {kind} address; calls there are refused "
                "unless its network is listed in CONVEYOR_HTTP_ALLOW_NETWORKS"
            )

    def check_url(self, url: str) -> None:
        """The checks that can be made before connecting: the host lists, and the address
        when the URL names one (names are checked by :class:`CheckingResolver`)."""
        host = urlsplit(url).hostname or ""
        self.check_host(host)
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return
        self.check_address(host, str(literal))


class CheckingResolver(AbstractResolver):
    """DNS resolution that refuses answers the policy does not allow.

    The connector connects only to addresses this returned, so the address that was
    checked is the address that is called: a name whose DNS answer changes between a
    check and the connection (DNS rebinding) cannot steer a call to a private address.
    """

    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        for answer in answers:  # every answer must pass: no mixing public and private
            self.policy.check_address(host, answer["host"])
        return answers

    async def close(self) -> None:
        await self._inner.close()


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date; None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return min(max(0.0, when.timestamp() - (time.time() if now is None else now)), MAX_RETRY_AFTER)


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``Conveyor-Signature`` header value: ``t=<unix seconds>,v1=<hex HMAC-SHA256>`` of
    ``"<t>." + body``. Receivers recompute it and compare in constant time, and reject old ``t``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, body: bytes, header: str, tolerance: float = 300.0) -> bool:
    """Check a ``Conveyor-Signature`` header (for receivers written in Python)."""
    try:
        fields = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(fields["t"])
    except (ValueError, KeyError):
        return False
    if abs(time.time() - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, body, timestamp), f"t={timestamp},v1={fields.get('v1', '')}")


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
            connector = aiohttp.TCPConnector(
                limit=self.settings.max_connections,
                resolver=CheckingResolver(self.policy),
                ttl_dns_cache=10,
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
    return caller


def _refusal(exc: BaseException) -> OutboundRefused | None:
    """The policy's refusal inside an aiohttp error (it wraps what the resolver raised)."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, OutboundRefused):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _reason(exc: BaseException) -> str:
    return str(exc) or "the connection failed or was closed by the peer"

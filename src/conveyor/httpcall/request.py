"""One HTTP-call job's request, validated from its keyword arguments; Retry-After parsing."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

DEFAULT_TIMEOUT = 90.0
MAX_TIMEOUT = 24 * 3600.0
MAX_RETRY_AFTER = 24 * 3600.0
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


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

"""Where and how to connect: a ``redis://``, ``rediss://`` or ``unix://`` URL parsed once."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import ConfigurationError

DEFAULT_SOCKET_TIMEOUT = 60.0


DEFAULT_CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to connect, parsed from a ``redis://``, ``rediss://`` or ``unix://`` URL."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None
    username: str | None = None
    password: str | None = None
    db: int = 0
    tls: bool = False
    tls_verify: bool = True
    tls_ca_file: str | None = None
    connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT
    command_timeout: float | None = DEFAULT_SOCKET_TIMEOUT
    """Seconds Redis has to answer a command (beyond a blocking command's own timeout) before
    the connection counts as dead and is replaced: what ends a blackhole or a half-open
    socket. ``?socket_timeout=`` in the URL; 0 waits forever."""

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        username = unquote(parts.username) if parts.username else query.get("username")
        password = unquote(parts.password) if parts.password else query.get("password")
        db = int(query.get("db", 0))
        timeout, connect_timeout = url_timeouts(query)
        if parts.scheme == "unix":
            return cls(
                path=parts.path,
                username=username,
                password=password,
                db=db,
                connect_timeout=connect_timeout,
                command_timeout=timeout,
            )
        if parts.scheme not in ("redis", "rediss"):
            raise ConfigurationError(f"the fast transport does not handle {parts.scheme}:// URLs")
        path = parts.path.strip("/")
        if path:
            try:
                db = int(path)
            except ValueError:
                raise ConfigurationError(f"database in {url!r} must be a number, got {path!r}") from None
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            username=username,
            password=password,
            db=db,
            tls=parts.scheme == "rediss",
            tls_verify=query.get("ssl_cert_reqs", "required") != "none",
            tls_ca_file=query.get("ssl_ca_certs"),
            connect_timeout=connect_timeout,
            command_timeout=timeout,
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.tls_ca_file)
        if not self.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def handshake(self) -> list[tuple[Any, ...]]:
        commands: list[tuple[Any, ...]] = []
        if self.password is not None:
            auth = ("AUTH", self.username, self.password) if self.username else ("AUTH", self.password)
            commands.append(auth)
        if self.db:
            commands.append(("SELECT", self.db))
        return commands


def url_timeouts(query: Mapping[str, str]) -> tuple[float | None, float | None]:
    """``socket_timeout`` and ``socket_connect_timeout`` from a URL's query (None: wait
    forever, written 0), with the same defaults on every topology: redis-py's own are to wait
    forever, except its asyncio cluster client's 5 s."""
    return (
        _seconds(query.get("socket_timeout", str(DEFAULT_SOCKET_TIMEOUT)), "socket_timeout"),
        _seconds(query.get("socket_connect_timeout", str(DEFAULT_CONNECT_TIMEOUT)), "socket_connect_timeout"),
    )


def _seconds(value: str, name: str) -> float | None:
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number of seconds, got {value!r}") from None
    if seconds < 0:
        raise ConfigurationError(f"{name} must not be negative, got {value!r}")
    return seconds or None

"""Redis connections from a URL: plain, TLS, unix socket, Sentinel and Cluster.

URL forms:

* ``redis://[[user]:password@]host[:port][/db]`` and ``rediss://`` (TLS), ``unix:///path.sock``
* ``redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[/db]``
* ``redis+cluster://[[user]:password@]host:port`` (any node; the others are discovered)

Clients always decode replies as UTF-8 text: every value Conveyor stores is JSON or an id.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.cluster
import redis.retry
import redis.sentinel
from redis.backoff import NoBackoff

from ..errors import ConfigurationError
from . import sentinel
from .base import AsyncTransport, SyncTransport
from .endpoint import Endpoint, url_timeouts
from .redispy import RedisPyAsyncTransport, RedisPySyncTransport
from .refusals import DEFAULT_CLUSTER_WAIT
from .resp_async import FastAsyncTransport
from .resp_sync import FastSyncTransport
from .sentinel import sentinel_options as _sentinel_options

SyncRedis = redis.Redis | redis.cluster.RedisCluster
AsyncRedis = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster

_COMMON: dict[str, Any] = {"decode_responses": True, "health_check_interval": 30}

_CLUSTER: dict[str, Any] = {"reinitialize_steps": 0}
"""A MOVED reply patches the one slot it names instead of, every fifth time, rebuilding the
whole map. The asyncio cluster client rebuilds it by closing every connection, including
those other coroutines are using at that moment: during a live slot migration a worker's
claim died of ``AttributeError: 'NoneType' object has no attribute 'writelines'`` (redis-py
8.1). A node that fails still makes redis-py rebuild the map (on the connection error).

Retries: none. By default redis-py's cluster client sends a command again after a
connection error or a timeout -- after which the command may well have run. An enqueue
whose reply was lost then ran twice: the second run found its generated ids taken, and
the client, taking that for an id clash, made the jobs again under new ids -- two jobs for
one call (a node frozen for 0.6 s with ``socket_timeout=0.3``). Refusals, which certainly
did not run, are retried by the transport (:mod:`conveyor.redis.refusals`); anything else is the
caller's to decide, as on a single server."""


def _cluster_options(retry_class: Any) -> dict[str, Any]:
    return {**_CLUSTER, "retry": retry_class(NoBackoff(), 0)}


def _sentinel_parts(url: str) -> tuple[list[tuple[str, int]], str, int, dict[str, Any]]:
    parts = urlsplit(url)
    netloc = parts.netloc
    auth: dict[str, Any] = {}
    if "@" in netloc:
        credentials, netloc = netloc.rsplit("@", 1)
        user, _, password = credentials.partition(":")
        if user:
            auth["username"] = unquote(user)
        if password:
            auth["password"] = unquote(password)
    hosts = []
    for item in netloc.split(","):
        host, _, port = item.partition(":")
        hosts.append((host, int(port or 26379)))
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ConfigurationError(
            f"sentinel URL {url!r} needs a service name: redis+sentinel://host:26379/mymaster"
        )
    db = int(path[1]) if len(path) > 1 else 0
    return hosts, path[0], db, auth


def _timeouts(url: str, at_most: float | None = None) -> tuple[str, dict[str, Any]]:
    """``url`` without its ``socket_timeout`` and ``socket_connect_timeout``, and those as
    redis-py options: the fast transport's defaults where the URL has none (redis-py's are to
    wait forever, which left a Sentinel client hanging on a half-open connection), and at
    most ``at_most`` each. They are taken out of the URL because redis-py would read them
    from it itself, and take a 0 there for a non-blocking socket rather than for patience."""
    parts = urlsplit(url)
    names = ("socket_timeout", "socket_connect_timeout")
    query = parse_qsl(parts.query, keep_blank_values=True)
    timeout, connect = url_timeouts({k: v for k, v in query if k in names})
    rest = urlencode([(k, v) for k, v in query if k not in names])
    options = {"socket_timeout": _least(timeout, at_most), "socket_connect_timeout": _least(connect, at_most)}
    return parts._replace(query=rest).geturl(), options


def _least(a: float | None, b: float | None) -> float | None:
    """The shorter of two timeouts, where None is no timeout at all."""
    return a if b is None else b if a is None else min(a, b)


def _check_scheme(url: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme not in ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster"):
        raise ConfigurationError(
            f"unsupported Redis URL scheme {scheme!r} in {url!r}; use redis://, rediss://, unix://, "
            "redis+sentinel:// or redis+cluster://"
        )
    return scheme


def sync_client(url: str, **kwargs: Any) -> SyncRedis:
    """A synchronous client for ``url``."""
    scheme = _check_scheme(url)
    url, timeouts = _timeouts(url)
    options = {**_COMMON, **timeouts, **kwargs}
    if scheme == "redis+sentinel":
        hosts, service, db, auth = _sentinel_parts(url)
        sentinel = redis.sentinel.Sentinel(
            hosts, sentinel_kwargs=_sentinel_options(auth, options), **auth, **options
        )  # type: ignore[no-untyped-call, unused-ignore]
        return sentinel.master_for(service, db=db)  # type: ignore[no-any-return, no-untyped-call, unused-ignore]
    if scheme == "redis+cluster":
        options.pop("health_check_interval")
        return redis.cluster.RedisCluster.from_url(
            url.replace("redis+cluster://", "redis://", 1),
            **{**_cluster_options(redis.retry.Retry), **options},
        )
    return redis.Redis.from_url(url, **options)


def async_client(url: str, **kwargs: Any) -> AsyncRedis:
    """An asyncio client for ``url``."""
    scheme = _check_scheme(url)
    url, timeouts = _timeouts(url)
    options = {**_COMMON, **timeouts, **kwargs}
    if scheme == "redis+sentinel":
        hosts, service, db, auth = _sentinel_parts(url)
        sentinel = redis.asyncio.sentinel.Sentinel(
            hosts, sentinel_kwargs=_sentinel_options(auth, options), **auth, **options
        )  # type: ignore[no-untyped-call, unused-ignore]
        return sentinel.master_for(service, db=db)  # type: ignore[no-any-return]
    if scheme == "redis+cluster":
        options.pop("health_check_interval")
        return redis.asyncio.cluster.RedisCluster.from_url(
            url.replace("redis+cluster://", "redis://", 1),
            **{**_cluster_options(redis.asyncio.retry.Retry), **options},
        )
    return redis.asyncio.Redis.from_url(url, **options)


def sync_transport(
    url: str, cluster_wait: float = DEFAULT_CLUSTER_WAIT, timeout: float | None = None
) -> SyncTransport:
    """The fast transport for plain, TLS and unix-socket URLs; redis-py for Sentinel and Cluster.

    Unlike :func:`sync_client`, a Sentinel transport follows a failover as soon as the
    sentinels begin it (:mod:`conveyor.redis.sentinel`). ``cluster_wait``: seconds a call waits
    out a cluster's refusals (see :mod:`conveyor.redis.refusals`). ``timeout``: seconds Redis has
    to accept a connection and to answer a command before the connection counts as dead,
    where shorter than the URL's ``socket_timeout`` and ``socket_connect_timeout`` -- the
    heartbeat's."""
    if _check_scheme(url) in ("redis", "rediss", "unix"):
        return FastSyncTransport(_at_most(Endpoint.from_url(url), timeout))
    url, timeouts = _timeouts(url, timeout)
    if _check_scheme(url) == "redis+sentinel":
        hosts, service, db, auth = _sentinel_parts(url)
        client, also_close = sentinel.sync_primary(hosts, service, db, auth, {**_COMMON, **timeouts})
        return RedisPySyncTransport(client, also_close=also_close, cluster_wait=cluster_wait)
    return RedisPySyncTransport(sync_client(url, **timeouts), cluster_wait=cluster_wait)


def _at_most(endpoint: Endpoint, timeout: float | None) -> Endpoint:
    return replace(
        endpoint,
        connect_timeout=_least(endpoint.connect_timeout, timeout),
        command_timeout=_least(endpoint.command_timeout, timeout),
    )


def async_transport(url: str, cluster_wait: float = DEFAULT_CLUSTER_WAIT) -> AsyncTransport:
    if _check_scheme(url) in ("redis", "rediss", "unix"):
        return FastAsyncTransport(Endpoint.from_url(url))
    if _check_scheme(url) == "redis+sentinel":
        # A client that follows the sentinels' primary at once (see conveyor.redis.sentinel); its
        # watcher and its connections to the sentinels are closed with it.
        url, timeouts = _timeouts(url)
        hosts, service, db, auth = _sentinel_parts(url)
        client, also_close = sentinel.async_primary(hosts, service, db, auth, {**_COMMON, **timeouts})
        return RedisPyAsyncTransport(client, also_close=also_close, cluster_wait=cluster_wait)
    return RedisPyAsyncTransport(async_client(url), cluster_wait=cluster_wait)


def sync_twin(
    transport: AsyncTransport,
    url: str | None = None,
    cluster_wait: float = DEFAULT_CLUSTER_WAIT,
    timeout: float | None = None,
) -> SyncTransport:
    """A sync transport to the same Redis as ``transport``, for a thread of the worker that
    must not depend on the event loop (the heartbeat). Derived from a Conveyor transport;
    for anything else (a redis-py asyncio client), opened from ``url``. ``timeout``: as for
    :func:`sync_transport`."""
    if isinstance(transport, FastAsyncTransport):
        endpoint = replace(transport.endpoint, command_timeout=transport.command_timeout)
        return FastSyncTransport(_at_most(endpoint, timeout))
    if url is None:
        raise ConfigurationError(
            "the worker renews its leases from a thread with a sync connection of its own, and "
            f"cannot derive one from {type(transport).__name__}: pass url= too (the same Redis)"
        )
    return sync_transport(url, cluster_wait, timeout)


def as_sync_transport(connection: Any, cluster_wait: float = DEFAULT_CLUSTER_WAIT) -> SyncTransport:
    """Accept a transport or a redis-py client (which must decode responses)."""
    if isinstance(connection, redis.Redis | redis.cluster.RedisCluster):
        _require_decoding(connection)
        return RedisPySyncTransport(connection, cluster_wait=cluster_wait)
    return connection  # type: ignore[no-any-return]


def as_async_transport(connection: Any, cluster_wait: float = DEFAULT_CLUSTER_WAIT) -> AsyncTransport:
    if isinstance(connection, redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster):
        _require_decoding(connection)
        return RedisPyAsyncTransport(connection, cluster_wait=cluster_wait)
    return connection  # type: ignore[no-any-return]


def _require_decoding(client: Any) -> None:
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None) or getattr(client, "get_connection_kwargs", dict)()
    if not kwargs.get("decode_responses"):
        raise ConfigurationError("pass a redis-py client created with decode_responses=True")


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***``, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()

"""Deprecated: moved to :mod:`conveyor.redis` (one module per transport); this re-export
module stays for one release."""

import warnings

from .redis.base import AsyncTransport, SyncTransport, raise_for_reply
from .redis.endpoint import DEFAULT_CONNECT_TIMEOUT, DEFAULT_SOCKET_TIMEOUT, Endpoint, url_timeouts
from .redis.redispy import RedisPyAsyncTransport, RedisPySyncTransport, connection_options
from .redis.resp_async import FastAsyncTransport
from .redis.resp_sync import FastSyncTransport, SyncPipe
from .redis.waits import MAX_WAIT_SLICE, sliced_wait

warnings.warn(
    "conveyor.transport moved to conveyor.redis (base, endpoint, waits, resp_sync, resp_async, redispy); "
    "this alias goes away in the next release",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_SOCKET_TIMEOUT",
    "MAX_WAIT_SLICE",
    "AsyncTransport",
    "Endpoint",
    "FastAsyncTransport",
    "FastSyncTransport",
    "RedisPyAsyncTransport",
    "RedisPySyncTransport",
    "SyncPipe",
    "SyncTransport",
    "connection_options",
    "raise_for_reply",
    "sliced_wait",
    "url_timeouts",
]

"""JSON encoding of job arguments and results (orjson), with a size cap.

JSON is the only format by default: a payload from Redis is never executed as code.
"""

from __future__ import annotations

from typing import Any

import orjson

from .errors import PayloadTooLarge, SerializationError

DEFAULT_MAX_PAYLOAD_BYTES = 512 * 1024


def dumps(value: Any, *, what: str = "value", limit: int | None = None) -> bytes:
    """Encode ``value`` as JSON, raising a clear error for unsupported types or oversize output."""
    try:
        data = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError as exc:
        raise SerializationError(
            f"{what} cannot be encoded as JSON: {exc}. Pass JSON-compatible values "
            "(str, int, float, bool, None, list, dict, datetime, UUID, dataclass)."
        ) from None
    if limit is not None and len(data) > limit:
        raise PayloadTooLarge(
            f"{what} is {len(data):,} bytes encoded, over the limit of {limit:,} bytes; "
            "store large data elsewhere and pass a reference, or raise max_payload_bytes."
        )
    # A copy of exactly the right size. orjson writes into a large buffer and shrinks it in
    # place; keeping thousands of those alive (a bulk enqueue, a batch of results) makes
    # glibc's malloc grow and trim the heap on every call, which cost ~2 us per value here.
    # The copy lets the next call reuse the same buffer: 10x faster for a bulk of 10,000.
    # Joining with b"" is the cheapest exact-size copy (60 ns; bytes(memoryview()) 160 ns).
    return b"".join((data, b""))


def loads(data: bytes | str) -> Any:
    """Decode JSON; raises ``orjson.JSONDecodeError`` (a ``ValueError``) on malformed input."""
    return orjson.loads(data)

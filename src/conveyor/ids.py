"""Job ids: short, unique and sortable by creation time."""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case
_lock = threading.Lock()
_last_ms = 0
_counter = 0


_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # 10 bits -> 2 characters, for bulk ids


def _encode(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_job_ids(count: int) -> list[str]:
    """``count`` ids at once, as :func:`new_job_id` would make them, for bulk enqueue.

    One clock read and one call to the random source for the whole batch.
    """
    global _last_ms, _counter
    if count <= 0:
        return []
    with _lock:
        now = int(time.time() * 1000)
        if now > _last_ms:
            _last_ms = now
            _counter = int.from_bytes(os.urandom(2), "big") >> 2
        else:
            _counter += 1
        ms, first = _last_ms, _counter
        _counter += count - 1
        if _counter >= 1 << 15:  # borrow milliseconds, as new_job_id does
            _last_ms += _counter >> 15
            _counter &= (1 << 15) - 1
    noise = os.urandom(3 * count)
    out: list[str] = []
    append, alphabet, pairs = out.append, _ALPHABET, _PAIRS
    stamp = -1
    prefix = ""
    for i in range(count):  # the hot loop of a bulk enqueue: _encode_35 inlined
        counter = first + i
        if ms + (counter >> 15) != stamp:
            stamp = ms + (counter >> 15)
            prefix = _encode(stamp, 9)
        j = 3 * i
        value = ((counter & 0x7FFF) << 20) | (noise[j] << 12) | (noise[j + 1] << 4) | (noise[j + 2] >> 4)
        append(
            prefix
            + alphabet[value >> 30]
            + pairs[(value >> 20) & 1023]
            + pairs[(value >> 10) & 1023]
            + pairs[value & 1023]
        )
    return out


def new_job_id() -> str:
    """Return a 16-character id: 45 bits of milliseconds, then 35 bits of counter and randomness.

    Ids made in one process are strictly increasing; ids made in different processes in
    the same millisecond differ by their random part. Lexical order is creation order to
    the millisecond, which keeps listings and logs readable.
    """
    global _last_ms, _counter
    with _lock:
        now = int(time.time() * 1000)
        if now <= _last_ms:
            _counter += 1
            if _counter >= 1 << 15:  # 32,768 ids in one ms: borrow the next millisecond
                _last_ms += 1
                _counter = int.from_bytes(os.urandom(2), "big") >> 2
        else:
            _last_ms = now
            _counter = int.from_bytes(os.urandom(2), "big") >> 2  # start low so increments fit
        ms, counter = _last_ms, _counter
    rand = int.from_bytes(os.urandom(3), "big") >> 4  # 20 bits
    return _encode(ms, 9) + _encode((counter << 20) | rand, 7)


def validate_job_id(job_id: str) -> str:
    if not job_id or len(job_id) > 256:
        raise ValueError("job id must be 1 to 256 characters long")
    if any(ch in job_id for ch in "{}") or any(ch.isspace() or not ch.isprintable() for ch in job_id):
        raise ValueError(f"job id {job_id!r} must not contain braces, whitespace or control characters")
    return job_id

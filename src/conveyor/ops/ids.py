"""Job ids: short, unique and sortable by creation time."""

from __future__ import annotations

import os
import random
import threading
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # 10 bits -> 2 characters
_lock = threading.Lock()
_last_ms = 0
_counter = 0
# The random bits come from a generator of our own, seeded from the OS and again in every
# forked child: os.urandom is a system call (0.7 us) per id, and the module-level random
# can be seeded by the application (random.seed(42) in every worker would repeat the bits).
_random = random.Random(os.urandom(16))
os.register_at_fork(after_in_child=lambda: _random.seed(os.urandom(16)))
_cached = (-1, "")  # a millisecond and its 9-character prefix, swapped as one object


def _encode(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def _reserve(count: int) -> tuple[int, int]:
    """Reserve ``count`` consecutive (millisecond, counter) slots; return the first."""
    global _last_ms, _counter
    with _lock:
        now = int(time.time() * 1000)
        if now > _last_ms:
            _last_ms = now
            _counter = _random.getrandbits(14)  # start low so increments fit
        else:
            _counter += 1
        ms, first = _last_ms, _counter
        _counter += count - 1
        if _counter >= 1 << 15:  # 32,768 ids in one ms: borrow the next milliseconds
            _last_ms += _counter >> 15
            _counter &= (1 << 15) - 1
    return ms, first


def new_job_ids(count: int) -> list[str]:
    """``count`` ids at once, for bulk enqueue: one clock read and one call to the random
    source for the whole batch. Each is what :func:`new_job_id` describes."""
    global _cached
    if count <= 0:
        return []
    ms, first = _reserve(count)
    noise = _random.randbytes(3 * count)
    out: list[str] = []
    append, alphabet, pairs = out.append, _ALPHABET, _PAIRS
    stamp, prefix = _cached
    for i in range(count):  # the hot loop of a bulk enqueue
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
    # Single enqueues in a row mostly fall in the same millisecond: keep its prefix (one
    # tuple, so a thread never sees one millisecond's number with another's prefix).
    _cached = (stamp, prefix)
    return out


def new_job_id() -> str:
    """Return a 16-character id: 45 bits of milliseconds, then 35 bits of counter and randomness.

    Ids made in one process are strictly increasing; ids made in different processes in
    the same millisecond differ by their random part. Lexical order is creation order to
    the millisecond, which keeps listings and logs readable.
    """
    return new_job_ids(1)[0]


def validate_job_id(job_id: str) -> str:
    """Return ``job_id`` if it can name a job, else raise ``ValueError``.

    Every id must be addressable as one segment of the HTTP API's paths
    (``/v1/queues/{queue}/jobs/{job_id}``): a ``/`` splits the segment even when sent as
    ``%2F``, and clients resolve a segment of ``.`` or ``..`` away before sending.
    """
    if not job_id or len(job_id) > 256:
        raise ValueError("job id must be 1 to 256 characters long")
    if any(ch in job_id for ch in "{}/") or any(ch.isspace() or not ch.isprintable() for ch in job_id):
        raise ValueError(f"job id {job_id!r} must not contain braces, '/', whitespace or control characters")
    if job_id in (".", ".."):
        raise ValueError(f"job id {job_id!r} cannot be used: URLs resolve it to another path")
    return job_id

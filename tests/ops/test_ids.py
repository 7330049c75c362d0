"""Job ids: 16 characters, unique, and in creation order within a process (ids.py)."""

from __future__ import annotations

import time

from conveyor.ops import ids


def test_ids_are_short_unique_and_in_creation_order() -> None:
    made = [ids.new_job_id()]
    for size in (1, 5, 40_000, 3):  # 40,000 in one batch spans more than one millisecond's counter
        made += ids.new_job_ids(size)
        made.append(ids.new_job_id())
    assert len(set(made)) == len(made)
    assert made == sorted(made), "single and bulk ids interleave in creation order"
    assert all(len(i) == 16 and set(i) <= set(ids._ALPHABET) for i in made)


def _bits(text: str) -> int:
    return int("".join(format(ids._ALPHABET.index(c), "05b") for c in text), 2)


def test_ids_keep_their_layout() -> None:
    """45 bits of milliseconds, then 15 bits of counter and 20 random bits."""
    now = time.time() * 1000
    batch = ids.new_job_ids(3)
    assert abs(_bits(batch[0][:9]) - now) < 5_000, "the first 9 characters are the time in ms"
    counters = [_bits(i[9:]) >> 20 for i in batch]
    same_ms = batch[0][:9] == batch[2][:9]
    assert not same_ms or counters == [counters[0], counters[0] + 1, counters[0] + 2]
    assert ids.validate_job_id(batch[0]) == batch[0]

"""Static checks of the Lua scripts: header contracts, KEYS counts, hash tags, no literal keys."""

from __future__ import annotations

import re

import pytest

from conveyor import JobState, Schedule, ops
from conveyor.ops import flows, schedules
from conveyor.ops.keys import QueueKeys
from conveyor.ops.scripts import load, names

KEYS = QueueKeys("q")
RETAIN = ops.Retention(-1, -1)

# One call of each operation that runs a script, to see the keys its wrapper passes.
CALLS = {
    "enqueue": lambda: ops.enqueue(KEYS, [ops.NewJob("x", "t", b"[]", ("p", 1))]),
    "enqueue_plain": lambda: ops.enqueue(KEYS, [ops.NewJob("x", "t", b"[]")]),
    "claim": lambda: ops.claim(KEYS, 1, 1000, "w"),
    "complete": lambda: ops.complete(KEYS, RETAIN, []),
    "fail": lambda: ops.fail(KEYS, RETAIN, []),
    "extend": lambda: ops.extend(KEYS, 1000, []),
    "sweep": lambda: ops.sweep(KEYS, 3, RETAIN),
    "requeue": lambda: ops.requeue(KEYS, []),
    "retry": lambda: ops.retry_failed(KEYS, None),
    "remove": lambda: ops.remove(KEYS, "x"),
    "purge": lambda: ops.purge(KEYS, []),
    "await": lambda: ops.wait_result(KEYS, "x", 1),
    "cancel": lambda: ops.cancel(KEYS, "x", "me", "why", RETAIN),
    "progress": lambda: ops.report(KEYS, "x", "1", "log", "line", 10, 1000),
    "schedule": lambda: schedules._tick(KEYS, Schedule("s", "t", every=1), 0, 1000, True),
    "counts": lambda: ops.counts(KEYS),
    "list": lambda: ops.list_jobs(KEYS, JobState.WAITING),
    "promote": lambda: ops.promote(KEYS, "x"),
    "child": lambda: flows.child_finished(KEYS, "x", "q c", "c", "null", RETAIN),
}


def test_every_script_has_a_wrapper() -> None:
    assert sorted(CALLS) == names()


@pytest.mark.parametrize("name", sorted(CALLS))
def test_header_declares_the_keys_the_wrapper_passes(name: str) -> None:
    script = load(name)
    raw = script.source.split("\n\n")[0]
    for word in ("KEYS[1]", "Returns", "Errors"):
        assert word in raw, f"{name}.lua header must document {word}"
    step = next(CALLS[name]())
    assert isinstance(step, ops.Script) and step.script.name == name
    declared = {int(n) for n in re.findall(r"KEYS\[(\d+)\]", raw)}
    used = {int(n) for n in re.findall(r"KEYS\[(\d+)\]", script.source)}
    assert declared == used == set(range(1, len(step.keys) + 1)), (
        f"{name}: header declares {sorted(declared)}, code uses {sorted(used)}, "
        f"wrapper passes {len(step.keys)}"
    )


@pytest.mark.parametrize("name", sorted(CALLS))
def test_all_keys_share_the_queue_hash_tag(name: str) -> None:
    step = next(CALLS[name]())
    assert all("{q}" in key for key in step.keys)


@pytest.mark.parametrize("name", names())
def test_no_key_is_a_literal_or_interpolated(name: str) -> None:
    source = load(name).source
    literal_keys = re.findall(r"redis\.call\('(\w+)',\s*'", source)
    assert literal_keys == [], f"{name}.lua names a key literally: {literal_keys}"
    assert "redis.call('KEYS'" not in source and "redis.call('SCAN'" not in source

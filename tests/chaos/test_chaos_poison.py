"""Poison jobs at the worker (issue 5, test 12).

Malformed jobs written straight into Redis (not JSON, not UTF-8, wrong shapes, unknown
task, options of the wrong type), mixed with good jobs, plus one job that SIGKILLs its
own worker every time. [all good jobs complete; each bad one dead-lettered after at most
one attempt with a precise reason and its raw bytes kept; no worker restart for decode
errors; the self-killing job dead-lettered after max crashes]

Found here: a job that kills its worker took the jobs claimed in the same batch with it,
and after ``max_crashes`` kills those good jobs were dead-lettered as "worker lost" too.
Fixed: a job lost ``alone_after`` times (default ``max_crashes - 1``) runs only alone (see
``scripts/sweep.lua``), so it is dead-lettered for its own crashes and takes nothing with it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import ledger
import orjson
import pytest
import redis
from harness import Workers, final_states, finished, full_only, knob, report

from conveyor import Client, Tasks

MAX_CRASHES = 3

# name -> (fields written over a valid job hash, expected error reason, words in the message)
SHAPES: dict[str, tuple[dict[str, bytes], str, str]] = {
    "not-json": ({"a": b"not json"}, "bad_payload", "cannot be decoded"),
    "args-object": ({"a": b'{"x": 1}'}, "bad_payload", "must be a JSON array"),
    "not-utf8": ({"a": b"[\xff\xfe]"}, "bad_payload", "not valid UTF-8"),
    "unknown-task": ({"n": b"nope", "a": b"[]"}, "unknown_task", "no task named 'nope'"),
    "name-not-utf8": ({"n": b"w\xffork", "a": b"[]"}, "unknown_task", "no task named"),
    "kwargs-list": ({"a": b"[]", "k": b"[1]"}, "bad_payload", "kwargs and options JSON objects"),
    "retries-text": ({"a": b"[]", "o": b'{"retries": "many"}'}, "bad_payload", "retries='many'"),
    "timeout-text": ({"a": b"[]", "o": b'{"timeout": "soon"}'}, "bad_payload", "timeout='soon'"),
    "backoff-kind": ({"a": b"[]", "o": b'{"backoff": {"kind": "nope"}}'}, "bad_payload", "backoff"),
    "no-name": ({"a": b"[]"}, "bad_payload", "no task name"),  # written without the n field
}


def poison_tasks(queue: str) -> tuple[Any, Any]:
    tasks = Tasks(queue=queue)

    @tasks.task
    async def work(n: int, sleep: float = 0.0) -> int: ...

    @tasks.task
    async def suicide() -> None: ...

    return work, suicide


def run_poison(
    server_factory: Any,
    tmp_path: Path,
    good: int,
    bad: int,
    killer_at: str | None,
    slots: int = 50,
    killers: int = 1,
    **env: Any,
) -> Any:
    """Good and malformed jobs interleaved; the self-killing job first, in the middle or absent
    (``killers`` of them spread out in the middle)."""
    server = server_factory(appendonly=False)
    queue = "chaos-poison"
    work, suicide = poison_tasks(queue)
    raw = redis.Redis(port=server.port, password=server.password)
    writer = ledger.LedgerWriter(tmp_path, "producer")
    written: dict[str, tuple[dict[str, bytes], str, str]] = {}
    names = list(SHAPES)
    with Client.from_url(server.url) as client:
        keys = client.keys(queue)
        killer_ids = [client.enqueue(suicide).id] if killer_at == "first" else []
        chunk = max(1, good // 10)
        spread = [(i + 1) * good // (killers + 1) // chunk * chunk for i in range(killers)]
        for start in range(0, good, chunk):  # good and bad jobs interleaved in the queue
            if killer_at == "middle":
                killer_ids += [client.enqueue(suicide).id for at in spread if at == start]
            handles = client.enqueue_many([work.call(i) for i in range(start, min(good, start + chunk))])
            writer.accepted(h.id for h in handles)
            with raw.pipeline(transaction=False) as pipe:
                for i in range(start * bad // good, min(good, start + chunk) * bad // good):
                    shape = names[i % len(names)]
                    job_id = f"bad-{shape}-{i}"
                    fields, reason, words = SHAPES[shape]
                    mapping = {"n": b"work", "ct": b"0", "s": b"waiting", **fields}
                    if shape == "no-name":
                        del mapping["n"]
                    pipe.hset(keys.job(job_id), mapping=mapping)
                    pipe.lpush(keys.waiting, job_id)
                    written[job_id] = (fields, reason, words)
                pipe.zadd(keys.marker, {"w": 0})
                pipe.execute()
        workers = Workers(
            server.url,
            queue,
            tmp_path,
            count=2,
            CHAOS_MAX_CRASHES=MAX_CRASHES,
            CHAOS_CONCURRENCY=slots,
            **env,
        )
        expected = good + len(written) + len(killer_ids)
        started = time.monotonic()
        try:
            while True:
                workers.restart_exited()
                counts = finished(client, queue)
                if sum(counts.values()) >= expected:
                    break
                assert time.monotonic() - started < 120 + 30 * len(killer_ids), counts
                time.sleep(0.05)
            elapsed = time.monotonic() - started
            records = ledger.read(tmp_path)
            states = final_states(client, queue, records)
            killer_jobs = [client.get_job(queue, killer) for killer in killer_ids]
        finally:
            codes = workers.stop()
        stored = {job_id: raw.hgetall(keys.job(job_id)) for job_id in written}
    result = ledger.check(records, states, workers.kills)
    report(
        f"poison:killer-{killer_at}"
        + "".join(f":{k.removeprefix('CHAOS_').lower()}={v}" for k, v in env.items()),
        {
            "good": good,
            "bad": len(written),
            "killers": len(killer_ids),
            "worker_exits": len(workers.exits),
            **result.summary(),
            "elapsed_s": round(elapsed, 1),
        },
    )
    assert all(code == 0 for code in codes), codes
    return written, stored, killer_jobs, workers, result


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_poison_jobs_are_dead_lettered_once_and_good_jobs_complete(
    server_factory: Any, tmp_path: Path
) -> None:
    good, bad = int(knob("POISON_GOOD", 2000)), int(knob("POISON_BAD", 200))
    written, stored, _, workers, result = run_poison(server_factory, tmp_path, good, bad, None)
    for job_id, (fields, reason, words) in written.items():
        job = stored[job_id]
        assert job[b"s"] == b"failed", (job_id, job)
        assert int(job.get(b"at", 0)) <= 1, "dead-lettered after at most one attempt"
        error = orjson.loads(job[b"e"])
        assert error["reason"] == reason and words in error["message"], (job_id, error)
        for name, value in fields.items():
            assert job[name.encode()] == value, "the raw bytes are kept for inspection"
    assert workers.exits == {} and workers.restarts == 0, "no worker restart for decode errors"
    assert result.lost == [] and result.stuck == [] and result.reverted == []
    assert result.states == {"completed": good} and result.extra_executions == 0


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_job_that_kills_its_worker_is_dead_lettered_after_max_crashes(
    server_factory: Any, tmp_path: Path
) -> None:
    # One slot per worker: claimed alone, it takes no other job down (see the 50-slot tests below).
    _, _, [killer_job], workers, result = run_poison(server_factory, tmp_path, 200, 0, "first", slots=1)
    assert killer_job.state.value == "failed" and killer_job.error
    assert killer_job.error["reason"] == "worker_lost" and killer_job.crashes == MAX_CRASHES
    assert list(workers.exits.values()) == [-9] * MAX_CRASHES, "each of its runs was a SIGKILL"
    assert result.lost == [] and result.stuck == [] and result.states == {"completed": 200}


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "alone_after", [pytest.param(None, marks=full_only), 1], ids=["last-chance-alone", "alone-after-1"]
)
def test_a_job_that_kills_its_worker_does_not_take_good_jobs_with_it(
    server_factory: Any, tmp_path: Path, alone_after: int | None
) -> None:
    env = {"CHAOS_ALONE_AFTER": alone_after} if alone_after else {}
    good, killers = int(knob("POISON_GOOD", 2000)), int(knob("POISON_KILLERS", 1))
    _, _, killer_jobs, workers, result = run_poison(
        server_factory, tmp_path, good, 0, "middle", killers=killers, **env
    )
    assert len(killer_jobs) == killers
    for killer_job in killer_jobs:
        assert killer_job.error and killer_job.error["reason"] == "worker_lost"
        assert killer_job.crashes == MAX_CRASHES
    # Two of them claimed together die together: one kill counts for both.
    assert set(workers.exits.values()) == {-9} and MAX_CRASHES <= len(workers.exits) <= MAX_CRASHES * killers
    assert result.lost == [] and result.stuck == []
    assert result.states == {"completed": good}, "good jobs claimed with it still complete"
    # A self-killing job takes the jobs held with it down until it is a suspect, then none.
    batch_mates = killers * (alone_after or MAX_CRASHES - 1) * 50
    assert result.extra_executions <= batch_mates, result.extra_executions

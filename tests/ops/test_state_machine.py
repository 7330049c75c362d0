"""A stateful property test of the scripts against a Python model (Hypothesis).

Random sequences of enqueue, delay, claim (by idle and busy workers), complete, fail, retry,
cancel, promote, worker crashes and sweeps run against a real server. Jobs lost
``MAX_CRASHES - 1`` times are suspects until they end: handed out only alone, to idle
workers. After every step: each job is in exactly one
state, the state in its hash matches the structure holding it, the counts equal the model,
fencing tokens only grow, a stale token is always refused, and no key is left behind that
the model cannot explain. ``CONVEYOR_STATEFUL_EXAMPLES`` and ``CONVEYOR_STATEFUL_STEPS``
raise the size for the long run (``make chaos``: 5,000 examples of 50 steps).
"""

from __future__ import annotations

import itertools
import os
import uuid

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from conveyor import Client, JobState, ops

KEEP = ops.Retention(-1, -1)
MAX_CRASHES = 3
EXAMPLES = int(os.environ.get("CONVEYOR_STATEFUL_EXAMPLES", "60"))
STEPS = int(os.environ.get("CONVEYOR_STATEFUL_STEPS", "30"))


@pytest.fixture(scope="module")
def machine_client(server_url: str) -> Client:
    return Client.from_url(server_url)


def test_scripts_agree_with_the_model(machine_client: Client) -> None:
    client = machine_client
    counter = itertools.count()

    class Scripts(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.queue = f"sm-{uuid.uuid4().hex[:10]}"
            self.keys = client.keys(self.queue)
            self.state: dict[str, JobState] = {}
            self.tokens: dict[str, str] = {}  # active job -> current token
            self.stale: list[tuple[str, str]] = []  # (job, token) pairs that must be refused
            # Outcomes recorded, which, sent again, are answered "recorded already", not refused:
            # the token a job completed with, and the token whose failure was recorded last.
            self.completed_with: dict[str, str] = {}
            self.last_failure: dict[str, str] = {}
            self.crashes: dict[str, int] = {}
            self.suspects: set[str] = set()  # jobs that run only alone until they end (see sweep.lua)
            self.last_token = 0

        def ids_in(self, state: JobState) -> list[str]:
            return sorted(job for job, s in self.state.items() if s is state)

        def waiting_suspects(self) -> set[str]:
            return {job for job in self.suspects if self.state[job] is JobState.WAITING}

        @rule(count=st.integers(1, 4), delayed=st.booleans(), priority=st.sampled_from([0, 0, 3, -2]))
        def enqueue(self, count: int, delayed: bool, priority: int) -> None:
            jobs = []
            for _ in range(count):
                job_id = f"j{next(counter)}"
                extras: tuple[object, ...] = ("w", "+600000") if delayed else ()
                if priority:
                    extras += ("p", priority)
                jobs.append(ops.NewJob(job_id, "t", b"[]", extras))
                self.state[job_id] = JobState.DELAYED if delayed else JobState.WAITING
            results = client.run(ops.enqueue(self.keys, jobs))
            assert all(r.outcome.value == "created" for r in results)

        @rule(n=st.integers(0, 5), idle=st.booleans(), make_room=st.booleans())
        def claim(self, n: int, idle: bool, make_room: bool) -> None:
            waiting_before = set(self.ids_in(JobState.WAITING))
            suspects = self.waiting_suspects()
            plain = waiting_before - suspects
            reply = client.run(
                ops.claim(self.keys, n, 600_000, "w", idle=idle, make_room_ms=0 if make_room else 600_000)
            )
            jobs = reply.jobs
            if n > 0 and suspects and idle:
                assert reply.alone and len(jobs) == 1 and jobs[0].id in suspects, "one suspect, alone"
            elif n > 0 and suspects and make_room:
                assert reply.alone and jobs == [], "a busy worker is told to make room"
            else:
                assert not reply.alone and len(jobs) == min(n, len(plain))
                assert all(job.id in plain for job in jobs)
            for job in jobs:
                assert job.id in waiting_before
                assert int(job.token) > self.last_token, "fencing tokens only grow"
                self.last_token = int(job.token)
                self.state[job.id] = JobState.ACTIVE
                self.tokens[job.id] = job.token

        @precondition(lambda self: self.tokens)
        @rule(data=st.data())
        def complete(self, data: st.DataObject) -> None:
            job = data.draw(st.sampled_from(sorted(self.tokens)))
            assert client.run(ops.complete(self.keys, KEEP, [(job, self.tokens[job], b"1")])) == [True]
            self.suspects.discard(job)
            self.completed_with[job] = self.tokens[job]
            self.stale.append((job, self.tokens.pop(job)))
            self.state[job] = JobState.COMPLETED

        @precondition(lambda self: self.tokens)
        @rule(data=st.data(), retry=st.booleans())
        def fail(self, data: st.DataObject, retry: bool) -> None:
            job = data.draw(st.sampled_from(sorted(self.tokens)))
            delay = 0 if retry else ops.RETRY_NEVER
            expected = 1 if retry else 2
            assert client.run(
                ops.fail(self.keys, KEEP, [(job, self.tokens[job], b"{}", delay, ops.NOT_DEFERRED)])
            ) == [expected]
            self.last_failure[job] = self.tokens[job]
            self.stale.append((job, self.tokens.pop(job)))
            self.state[job] = JobState.WAITING if retry else JobState.FAILED
            if not retry:
                self.suspects.discard(job)  # it is over; a retry keeps a suspect a suspect

        @precondition(lambda self: self.stale)
        @rule(data=st.data())
        def stale_token_is_refused(self, data: st.DataObject) -> None:
            job, token = data.draw(st.sampled_from(self.stale))
            if self.tokens.get(job) == token:
                return
            # The attempt's own outcome sent again (a batch retried after a broken connection)
            # is answered "recorded already"; any other stale outcome is refused.
            again = ops.ALREADY_RECORDED
            expect_complete = again if self.completed_with.get(job) == token else 0
            expect_fail = again if self.last_failure.get(job) == token else 0
            assert client.run(ops.complete(self.keys, KEEP, [(job, token, b"2")])) == [expect_complete]
            assert client.run(ops.fail(self.keys, KEEP, [(job, token, b"{}", -1, ops.NOT_DEFERRED)])) == [
                expect_fail
            ]

        @precondition(lambda self: self.tokens)
        @rule()
        def worker_crashes_and_sweep(self) -> None:
            self.leases_run_out(sorted(self.tokens))

        @precondition(lambda self: self.tokens)
        @rule(data=st.data())
        def the_same_worker_is_handed_a_job_it_still_runs(self, data: st.DataObject) -> None:
            """A lease runs out while its worker runs the job (an outage, a stall); the sweep
            re-delivers it and the same worker claims it again: the two attempts' answers
            stay apart -- the old one is lost and refused, the new one renewed."""
            job = data.draw(st.sampled_from(sorted(self.tokens)))
            old = self.tokens[job]
            self.leases_run_out([job])
            if self.state[job] is JobState.WAITING:
                self.claim(len(self.ids_in(JobState.WAITING)), idle=True, make_room=False)
            if job not in self.tokens:
                return  # dead-lettered, or a suspect waits to be served first
            new = self.tokens[job]
            lost, aborted = client.run(ops.extend(self.keys, 600_000, [(job, old), (job, new)]))
            assert lost == [old] and aborted == [], "renewal answers name the attempt"
            assert client.run(ops.complete(self.keys, KEEP, [(job, old, b"2")])) == [0]
            assert client.run(ops.fail(self.keys, KEEP, [(job, old, b"{}", -1, ops.NOT_DEFERRED)])) == [0]

        def leases_run_out(self, jobs: list[str]) -> None:
            """The leases of these active jobs run out and a sweep re-delivers them."""
            for job in jobs:
                client.transport.call("ZADD", self.keys.active, 0, job)
            # A long lease: the sweep takes no pause between two steps for a Redis outage.
            recovered, dead, *_ = client.run(ops.sweep(self.keys, MAX_CRASHES, KEEP, lease_ms=600_000))
            assert sorted(recovered + dead) == sorted(jobs)
            for job in jobs:
                token = self.tokens.pop(job)
                self.crashes[job] = self.crashes.get(job, 0) + 1
                expect_dead = self.crashes[job] >= MAX_CRASHES
                assert (job in dead) == expect_dead
                self.state[job] = JobState.FAILED if expect_dead else JobState.WAITING
                if self.crashes[job] == MAX_CRASHES - 1:
                    self.suspects.add(job)
                elif expect_dead:
                    self.suspects.discard(job)
                self.stale.append((job, token))

        @precondition(lambda self: any(s is JobState.DELAYED for s in self.state.values()))
        @rule()
        def delayed_jobs_come_due(self) -> None:
            for job in self.ids_in(JobState.DELAYED):
                client.transport.call("ZADD", self.keys.delayed, 0, job)
            client.run(ops.claim(self.keys, 0, 600_000, "w"))  # promotes, takes nothing
            for job in self.ids_in(JobState.DELAYED):
                self.state[job] = JobState.WAITING

        @rule()
        def retry_dead_jobs(self) -> None:
            dead = self.ids_in(JobState.FAILED)
            assert client.run(ops.retry_failed(self.keys, None)) == len(dead)
            for job in dead:
                self.state[job] = JobState.WAITING
                self.crashes.pop(job, None)
                self.suspects.discard(job)

        @precondition(
            lambda self: any(s in (JobState.WAITING, JobState.DELAYED) for s in self.state.values())
        )
        @rule(data=st.data())
        def cancel(self, data: st.DataObject) -> None:
            candidates = self.ids_in(JobState.WAITING) + self.ids_in(JobState.DELAYED)
            job = data.draw(st.sampled_from(candidates))
            assert client.run(ops.cancel(self.keys, job, "test", "why", KEEP)) == "cancelled"
            self.state[job] = JobState.CANCELLED
            self.suspects.discard(job)

        @invariant()
        def counts_match_the_model(self) -> None:
            counts = client.counts(self.queue)
            for state in JobState:
                assert counts[state.value] == len(self.ids_in(state)), state

        @invariant()
        def every_job_is_in_exactly_one_place_and_says_so(self) -> None:
            k = self.keys
            places = {
                JobState.WAITING: set(client.transport.call("LRANGE", k.waiting, 0, -1))
                | set(client.transport.call("ZRANGE", k.prioritized, 0, -1))
                | set(client.transport.call("ZRANGE", k.suspects, 0, -1)),
                JobState.DELAYED: set(client.transport.call("ZRANGE", k.delayed, 0, -1)),
                JobState.ACTIVE: set(client.transport.call("ZRANGE", k.active, 0, -1)),
                JobState.COMPLETED: set(client.transport.call("ZRANGE", k.completed, 0, -1)),
                JobState.FAILED: set(client.transport.call("ZRANGE", k.failed, 0, -1)),
                JobState.CANCELLED: set(client.transport.call("ZRANGE", k.cancelled, 0, -1)),
            }
            assert set(client.transport.call("ZRANGE", k.suspects, 0, -1)) == self.waiting_suspects()
            for job, state in self.state.items():
                holders = [s for s, members in places.items() if job in members]
                assert holders == [state], (job, state, holders)
                assert client.transport.call("HGET", k.job(job), "s") == state.value

        @invariant()
        def no_key_the_model_cannot_explain(self) -> None:
            keys = set(client.transport.call("KEYS", f"{self.keys.base}*"))
            allowed = {self.keys.job(j) for j in self.state} | {
                self.keys.waiting,
                self.keys.prioritized,
                self.keys.suspects,
                self.keys.delayed,
                self.keys.active,
                self.keys.completed,
                self.keys.failed,
                self.keys.cancelled,
                self.keys.marker,
                self.keys.sequence,
                self.keys.events,
                self.keys.lease_clock,
            }
            # The queue's figures: its totals and one hash per minute (include/metrics.lua).
            figures = {k for k in keys if k.startswith(self.keys.metrics_prefix)}
            suffixes = {k[len(self.keys.metrics_prefix) :] for k in figures}
            assert all(s == "all" or s.isdigit() for s in suffixes), suffixes
            assert keys - figures <= allowed, keys - figures - allowed

        def teardown(self) -> None:
            # KEYS walks the whole keyspace whatever the pattern: keys left by earlier examples
            # made every later step slower (the full-size run took 3x as long as before).
            leftover = client.transport.call("KEYS", f"{self.keys.base}*")
            if leftover:
                client.transport.call("DEL", *leftover)

    Scripts.TestCase.settings = settings(
        max_examples=EXAMPLES,
        stateful_step_count=STEPS,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    Scripts.TestCase().runTest()

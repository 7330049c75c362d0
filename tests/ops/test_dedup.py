"""Deduplication keys: while the first job is unfinished, for a window (throttle), debounce."""

from __future__ import annotations

import time

import pytest

from conveyor import AsyncClient, Client, EnqueueOutcome, JobState, Tasks

from helpers import running_worker


def make(queue: str):  # type: ignore[no-untyped-def]
    tasks = Tasks(queue=queue)

    @tasks.task
    async def sync_account(account: int, version: int = 0) -> int:
        return version

    return tasks, sync_account


def test_key_matches_while_the_first_job_is_unfinished(client: Client, queue: str) -> None:
    _, sync_account = make(queue)
    task = sync_account.with_options(dedup="account-7")
    first = client.enqueue(task, 7)
    again = client.enqueue(task, 7, version=2)
    assert first.created and not again.created
    assert again.outcome is EnqueueOutcome.DUPLICATE and again.id == first.id, "names the job it matched"
    assert client.counts(queue)["waiting"] == 1
    client.cancel(queue, first.id)  # finished (cancelled): the key is free again
    third = client.enqueue(task, 7)
    assert third.created and third.id != first.id


def test_bulk_dedup_within_one_call(client: Client, queue: str) -> None:
    _, sync_account = make(queue)
    calls = [sync_account.with_options(dedup=f"a{n % 3}").call(n) for n in range(9)]
    handles = client.enqueue_many(calls)
    assert [h.outcome for h in handles].count(EnqueueOutcome.CREATED) == 3
    assert {h.id for h in handles} == {h.id for h in handles[:3]}
    assert client.counts(queue)["waiting"] == 3


def test_throttle_window_holds_even_after_the_job_finished(client: Client, queue: str) -> None:
    _, sync_account = make(queue)
    task = sync_account.with_options(dedup="report", dedup_window=0.3)
    first = client.enqueue(task, 1)
    client.cancel(queue, first.id)
    assert client.enqueue(task, 1).outcome is EnqueueOutcome.DUPLICATE, "the window, not the job, decides"
    time.sleep(0.35)
    assert client.enqueue(task, 1).created


async def test_debounce_the_last_enqueue_wins(aclient: AsyncClient, url: str, queue: str) -> None:
    tasks, sync_account = make(queue)
    task = sync_account.with_options(dedup="acct-1", dedup_window=0.3, debounce=True)
    first = await aclient.enqueue(task, 1, version=1)
    second = await aclient.enqueue(task, 1, version=2)
    third = await aclient.enqueue(task, 1, version=3)
    assert second.created and second.replaced == first.id and third.replaced == second.id
    replaced = await first.fetch()
    assert replaced.state is JobState.CANCELLED and replaced.error and replaced.error["reason"] == "debounced"
    async with running_worker(tasks, url):
        assert await third.result(timeout=5) == 3, "only the last one runs, after the quiet period"
    counts = await aclient.counts(queue)
    assert counts["completed"] == 1 and counts["cancelled"] == 2


def test_debounce_needs_a_key_and_a_window() -> None:
    _, sync_account = make("q")
    with pytest.raises(ValueError, match="debounce needs"):
        sync_account.with_options(debounce=True)
    with pytest.raises(ValueError, match="dedup key"):
        sync_account.with_options(dedup="a{b}")

"""Enqueues that mypy must accept, and enqueues it must reject (read by tests/test_typing.py).

A line ending in ``# E: code ...`` must draw exactly those mypy error codes; every other
line must draw none. Never run, never collected: mypy checks it with the project's config.
Bare ``dict``/``list`` and a missing return annotation are what users write outside
strict mode (issue 14 came from ``-> dict``), so strict mode's complaints about them are off.
"""
# mypy: disable-error-code="type-arg, no-untyped-def"

from __future__ import annotations

from typing import Any

from conveyor import AsyncClient, Client, Tasks

tasks = Tasks()
client = Client.from_url("redis://localhost:1")


@tasks.task
def resize(width: int, height: int = 1) -> dict:
    return {}


@tasks.task(retries=2)
def resize_opts(width: int, height: int = 1) -> dict:
    return {}


@tasks.task
def counts(width: int, height: int = 1) -> dict[str, int]:
    return {}


@tasks.task
def nothing(width: int, height: int = 1) -> None:
    return None


@tasks.task
def listed(width: int, height: int = 1) -> list:
    return []


@tasks.task
def untyped_result(width: int, height: int = 1):
    return []


@tasks.task
async def aresize(width: int, height: int = 1) -> dict:
    return {}


@tasks.task(retries=2, max_deferrals=5)
async def aresize_opts(width: int, height: int = 1) -> dict:
    return {}


@tasks.task
async def acounts(width: int, height: int = 1) -> dict[str, Any]:
    return {}


@tasks.task
async def anothing(width: int, height: int = 1) -> None:
    return None


@tasks.task
async def alisted(width: int, height: int = 1) -> list:
    return []


@tasks.task
async def any_param(width: Any, height: int = 1) -> int:
    return 1


# The issue's own example, sync and async.
client.enqueue(resize, "forty-two", widht=3)  # E: arg-type call-arg
client.enqueue(aresize, "forty-two", widht=3)  # E: arg-type call-arg

# Each task: right calls, then a wrong type, a misspelled keyword, a missing and an extra argument.
client.enqueue(resize, 1)
client.enqueue(resize, 1, 2)
client.enqueue(resize, width=1, height=2)
client.enqueue(resize, "1")  # E: arg-type
client.enqueue(resize, 1, widht=3)  # E: call-arg
client.enqueue(resize)  # E: call-arg
client.enqueue(resize, 1, 2, 3)  # E: call-arg

client.enqueue(resize_opts, 1, height=2)
client.enqueue(resize_opts, "1")  # E: arg-type
client.enqueue(resize_opts, 1, widht=3)  # E: call-arg
client.enqueue(resize_opts)  # E: call-arg
client.enqueue(resize_opts, 1, 2, 3)  # E: call-arg

client.enqueue(counts, 1, 2)
client.enqueue(counts, "1")  # E: arg-type
client.enqueue(counts, 1, widht=3)  # E: call-arg
client.enqueue(counts)  # E: call-arg
client.enqueue(counts, 1, 2, 3)  # E: call-arg

client.enqueue(nothing, 1, 2)
client.enqueue(nothing, "1")  # E: arg-type
client.enqueue(nothing, 1, widht=3)  # E: call-arg
client.enqueue(nothing)  # E: call-arg
client.enqueue(nothing, 1, 2, 3)  # E: call-arg

client.enqueue(listed, 1, 2)
client.enqueue(listed, "1")  # E: arg-type
client.enqueue(listed, 1, widht=3)  # E: call-arg
client.enqueue(listed)  # E: call-arg
client.enqueue(listed, 1, 2, 3)  # E: call-arg

client.enqueue(untyped_result, 1, 2)
client.enqueue(untyped_result, "1")  # E: arg-type
client.enqueue(untyped_result, 1, widht=3)  # E: call-arg
client.enqueue(untyped_result)  # E: call-arg
client.enqueue(untyped_result, 1, 2, 3)  # E: call-arg

client.enqueue(aresize, 1, 2)
client.enqueue(aresize, "1")  # E: arg-type
client.enqueue(aresize, 1, widht=3)  # E: call-arg
client.enqueue(aresize)  # E: call-arg
client.enqueue(aresize, 1, 2, 3)  # E: call-arg

client.enqueue(aresize_opts, 1, 2)
client.enqueue(aresize_opts, "1")  # E: arg-type
client.enqueue(aresize_opts, 1, widht=3)  # E: call-arg
client.enqueue(aresize_opts)  # E: call-arg
client.enqueue(aresize_opts, 1, 2, 3)  # E: call-arg

client.enqueue(acounts, 1, 2)
client.enqueue(acounts, "1")  # E: arg-type
client.enqueue(acounts, 1, widht=3)  # E: call-arg
client.enqueue(acounts)  # E: call-arg
client.enqueue(acounts, 1, 2, 3)  # E: call-arg

client.enqueue(anothing, 1, 2)
client.enqueue(anothing, "1")  # E: arg-type
client.enqueue(anothing, 1, widht=3)  # E: call-arg
client.enqueue(anothing)  # E: call-arg
client.enqueue(anothing, 1, 2, 3)  # E: call-arg

client.enqueue(alisted, 1, 2)
client.enqueue(alisted, "1")  # E: arg-type
client.enqueue(alisted, 1, widht=3)  # E: call-arg
client.enqueue(alisted)  # E: call-arg
client.enqueue(alisted, 1, 2, 3)  # E: call-arg

client.enqueue(any_param, "anything goes", 2)
client.enqueue(any_param, 1, "2")  # E: arg-type
client.enqueue(any_param, 1, widht=3)  # E: call-arg
client.enqueue(any_param)  # E: call-arg

# Options keep the signature; bulk calls are checked too.
client.enqueue(aresize.with_options(queue="q"), 1)
client.enqueue(aresize.with_options(queue="q"), "1")  # E: arg-type
client.enqueue_many([acounts.call(1), acounts.call(2, 3)])
client.enqueue_many([acounts.call("1")])  # E: arg-type

# A job's result is the task's return value, awaited for an async task.
got_counts: dict[str, int] = client.enqueue(counts, 1).result()
got_acounts: dict[str, Any] = client.enqueue(acounts, 1).result()
got_aresize: dict = client.enqueue(aresize, 1).result()
got_none: None = client.enqueue(anothing, 1).result()
wrong_counts: str = client.enqueue(counts, 1).result()  # E: assignment
wrong_acounts: str = client.enqueue(acounts, 1).result()  # E: assignment
wrong_alisted: dict = client.enqueue(alisted, 1).result()  # E: assignment


async def from_async_code(aclient: AsyncClient) -> None:
    await aclient.enqueue(aresize, 1, height=2)
    await aclient.enqueue(resize, 1)
    await aclient.enqueue(aresize, "forty-two", widht=3)  # E: arg-type call-arg
    await aclient.enqueue(acounts, 1, widht=3)  # E: call-arg
    await aclient.enqueue(resize, "1")  # E: arg-type
    await aclient.enqueue(alisted)  # E: call-arg
    handle = await aclient.enqueue(acounts, 1)
    got: dict[str, Any] = await handle.result()
    wrong: int = await handle.result()  # E: assignment
    assert got and wrong

"""The KEYS of each Lua script, by name: one NamedTuple per script (two pairs share one).

A script binds each ``KEYS[n]`` to a named local at its top (its binding block), and its
wrapper passes one of these tuples, so a key is known by its name on both sides and the
static test (``tests/ops/test_scripts.py``) compares the two lists name by name: two swapped
keys fail it. One rule links the names: a field is named as the :class:`QueueKeys`
attribute it holds, and the script binds it as ``<field>_key``, or as ``<field>`` for a
prefix of keys (a field ending in ``_prefix``: it is not a key itself).

The per-queue layouts are built once per :class:`QueueKeys` (its ``for_<script>``
attributes) and passed as they are: a NamedTuple is a tuple, so the executors see no
difference, and the hot paths (enqueue, claim, complete, fail) look one attribute up
instead of building a tuple of up to 15 keys on every call. Only the scripts that act on
one job's own keys (``await``, ``progress``) build theirs per call.
"""

from __future__ import annotations

from typing import NamedTuple


class EnqueuePlainKeys(NamedTuple):
    """``enqueue_plain.lua``: jobs without options, the common case."""

    waiting: str
    marker: str
    events: str
    job_prefix: str


class EnqueueKeys(NamedTuple):
    """``enqueue.lua``: jobs with options (priority, delay, dedup, group, flows)."""

    waiting: str
    prioritized: str
    delayed: str
    marker: str
    sequence: str
    job_prefix: str
    events: str
    cancelled: str
    dedup_prefix: str
    group_prefix: str
    parents: str
    suspects: str
    history: str
    history_feed: str


class ClaimKeys(NamedTuple):
    """``claim.lua``."""

    waiting: str
    prioritized: str
    delayed: str
    active: str
    marker: str
    sequence: str
    job_prefix: str
    settings: str
    rate: str
    failed: str
    done_prefix: str
    events: str
    group_prefix: str
    outbox: str
    suspects: str
    history: str
    history_feed: str
    metrics_prefix: str


class CompleteKeys(NamedTuple):
    """``complete.lua``."""

    active: str
    completed: str
    job_prefix: str
    done_prefix: str
    waiting: str
    prioritized: str
    marker: str
    events: str
    group_prefix: str
    outbox: str
    history: str
    history_feed: str
    metrics_prefix: str
    settings: str


class FailKeys(NamedTuple):
    """``fail.lua``."""

    active: str
    waiting: str
    prioritized: str
    delayed: str
    failed: str
    marker: str
    sequence: str
    job_prefix: str
    done_prefix: str
    cancelled: str
    events: str
    group_prefix: str
    outbox: str
    suspects: str
    history: str
    history_feed: str
    metrics_prefix: str
    settings: str


class ExtendKeys(NamedTuple):
    """``extend.lua``."""

    active: str
    job_prefix: str
    lease_clock: str


class SweepKeys(NamedTuple):
    """``sweep.lua``."""

    active: str
    waiting: str
    prioritized: str
    failed: str
    marker: str
    sequence: str
    job_prefix: str
    done_prefix: str
    events: str
    group_prefix: str
    outbox: str
    suspects: str
    lease_clock: str
    history: str
    history_feed: str
    metrics_prefix: str
    settings: str


class RequeueKeys(NamedTuple):
    """``requeue.lua``: where the jobs come from, then every key that putting a job back in
    line touches (the layout of :class:`RetryKeys`)."""

    active: str
    waiting: str
    prioritized: str
    marker: str
    sequence: str
    job_prefix: str
    group_prefix: str
    suspects: str


class RetryKeys(NamedTuple):
    """``retry.lua``: the layout of :class:`RequeueKeys`, with the failed set as the source."""

    failed: str
    waiting: str
    prioritized: str
    marker: str
    sequence: str
    job_prefix: str
    group_prefix: str
    suspects: str


class NotRunningKeys(NamedTuple):
    """``remove.lua`` and ``purge.lua``: every place a job that is not running can be."""

    waiting: str
    prioritized: str
    delayed: str
    completed: str
    failed: str
    job_prefix: str
    cancelled: str
    group_prefix: str
    parents: str
    outbox: str
    suspects: str
    history: str
    history_feed: str


class CancelKeys(NamedTuple):
    """``cancel.lua``."""

    waiting: str
    prioritized: str
    delayed: str
    cancelled: str
    job_prefix: str
    done_prefix: str
    events: str
    group_prefix: str
    outbox: str
    parents: str
    suspects: str
    history: str
    history_feed: str
    metrics_prefix: str
    settings: str


class PromoteKeys(NamedTuple):
    """``promote.lua``."""

    delayed: str
    waiting: str
    prioritized: str
    marker: str
    sequence: str
    job_prefix: str
    events: str
    group_prefix: str
    suspects: str


class ScheduleKeys(NamedTuple):
    """``schedule.lua``."""

    waiting: str
    prioritized: str
    delayed: str
    marker: str
    sequence: str
    job_prefix: str
    events: str
    schedule_next: str
    group_prefix: str


class CountsKeys(NamedTuple):
    """``counts.lua``."""

    waiting: str
    prioritized: str
    delayed: str
    active: str
    completed: str
    failed: str
    cancelled: str
    group_prefix: str
    parents: str
    suspects: str


class FiguresKeys(NamedTuple):
    """``figures.lua``."""

    waiting: str
    prioritized: str
    delayed: str
    active: str
    completed: str
    failed: str
    cancelled: str
    group_prefix: str
    parents: str
    suspects: str
    settings: str
    metrics_prefix: str
    job_prefix: str


class ListKeys(NamedTuple):
    """``list.lua``."""

    waiting: str
    prioritized: str
    delayed: str
    active: str
    completed: str
    failed: str
    job_prefix: str
    cancelled: str
    group_prefix: str
    parents: str
    suspects: str


class ChildKeys(NamedTuple):
    """``child.lua``: all of the parent's queue."""

    waiting: str
    prioritized: str
    parents: str
    sequence: str
    job_prefix: str
    marker: str
    failed: str
    done_prefix: str
    events: str
    group_prefix: str
    outbox: str
    history: str
    history_feed: str


class AwaitKeys(NamedTuple):
    """``await.lua``: one job's keys, built per call."""

    job: str


class ProgressKeys(NamedTuple):
    """``progress.lua``: one job's keys, built per call."""

    job: str
    logs: str
    events: str


class ArchivedKeys(NamedTuple):
    """``archived.lua``: the history hand-off."""

    history: str
    history_feed: str


class HistoryOnKeys(NamedTuple):
    """``history_on.lua``."""

    history: str
    history_feed: str

"""The metric names of issue 16's spec, and a reader of the metric names a PromQL expression uses.

The names are a literal copy of the shared spec (fleet figures from ``conveyor api`` /metrics,
a worker's own from ``--metrics-port``): the alert rules and the dashboard in deploy/ must use
nothing else, so that a renamed metric or a typo fails here, not silently in Grafana.
"""

from __future__ import annotations

import re

HISTOGRAMS = frozenset(
    {
        "conveyor_queue_wait_seconds",
        "conveyor_queue_run_seconds",
        "conveyor_worker_job_run_seconds",
        "conveyor_worker_redis_round_trip_seconds",
    }
)

SPEC_METRICS = HISTOGRAMS | frozenset(
    {
        # Fleet-wide, per queue.
        "conveyor_queue_jobs",
        "conveyor_queue_oldest_waiting_age_seconds",
        "conveyor_queue_delayed_due_jobs",
        "conveyor_queue_paused",
        "conveyor_queue_concurrency_limit",
        "conveyor_queue_rate_limit_jobs",
        "conveyor_queue_rate_limit_window_seconds",
        "conveyor_queue_suspects",
        "conveyor_queue_dead_letters",
        "conveyor_queue_workers",
        "conveyor_queue_worker_concurrency",
        "conveyor_queue_jobs_completed_total",
        "conveyor_queue_jobs_failed_total",
        "conveyor_queue_jobs_retried_total",
        "conveyor_queue_jobs_cancelled_total",
        # Redis, and the exporter itself.
        "conveyor_redis_up",
        "conveyor_redis_memory_used_bytes",
        "conveyor_redis_memory_max_bytes",
        "conveyor_redis_info",
        "conveyor_redis_eviction_policy_safe",
        "conveyor_redis_persistence_enabled",
        "conveyor_redis_connected_clients",
        "conveyor_redis_blocked_clients",
        "conveyor_redis_ops_per_second",
        "conveyor_scrape_duration_seconds",
        # One worker process.
        "conveyor_worker_jobs_started_total",
        "conveyor_worker_jobs_completed_total",
        "conveyor_worker_jobs_failed_total",
        "conveyor_worker_jobs_retried_total",
        "conveyor_worker_jobs_cancelled_total",
        "conveyor_worker_jobs_in_flight",
        "conveyor_worker_concurrency",
        "conveyor_worker_lease_renewals_total",
        "conveyor_worker_leases_lost_total",
        "conveyor_worker_stale_acks_total",
        "conveyor_worker_event_loop_lag_seconds",
        "conveyor_worker_threads_busy",
        "conveyor_worker_threads_max",
        "conveyor_worker_heartbeat_age_seconds",
        "conveyor_worker_up",
    }
)

SERIES_NAMES = (SPEC_METRICS - HISTOGRAMS) | frozenset(
    name + suffix for name in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")
)
"""The names a query can select: a histogram is scraped as its _bucket, _sum and _count."""

QUEUE_LABELLED = frozenset(
    name
    for name in SERIES_NAMES
    if name.startswith("conveyor_queue_")
    or name.startswith("conveyor_worker_jobs_")
    or name.startswith("conveyor_worker_job_run_seconds")
)
"""Series that carry a ``queue`` label (the spec's per-queue and per-task figures)."""

# Words of PromQL, not metric names: the functions, aggregations and keywords deploy/ uses, and
# a few more. An unknown function shows up as an unknown "metric" and fails loudly: add it here.
PROMQL_WORDS = frozenset(
    {
        "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
        "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right",
        "and", "or", "unless", "bool", "offset", "rate", "irate", "increase", "delta", "idelta",
        "deriv", "predict_linear", "histogram_quantile", "vector", "scalar", "abs", "clamp_min",
        "clamp_max", "absent", "absent_over_time", "max_over_time", "min_over_time",
        "avg_over_time", "label_replace", "label_join", "time", "timestamp", "changes", "resets",
    }
)  # fmt: skip

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_LABEL_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_GRAFANA_VARIABLE = re.compile(r"\$\{?\w+\}?")
_WORD = re.compile(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*")
_SELECTOR = re.compile(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{[^{}]*\})?")


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects: its words less PromQL's own, once label matchers,
    label lists, ranges, strings and Grafana variables are out of the way."""
    text = _GRAFANA_VARIABLE.sub("", expr)
    text = _LABEL_MATCHERS.sub("", _STRING.sub('""', text))
    text = _LABEL_LIST.sub(r"\1", _RANGE.sub("", text))
    return {word for word in _WORD.findall(text) if word not in PROMQL_WORDS}


def selectors(expr: str) -> list[tuple[str, str]]:
    """Each metric selector of ``expr`` as (name, label matchers or "")."""
    text = _LABEL_LIST.sub(r"\1", _RANGE.sub("", expr))
    return [
        (name, matchers or "")
        for name, matchers in _SELECTOR.findall(text)
        if name not in PROMQL_WORDS and not name.startswith("$")
    ]

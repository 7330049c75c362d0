"""The Grafana dashboard of deploy/grafana: well formed, bound to its data source variable, and
querying only metrics Conveyor exports, with PromQL that Prometheus parses."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from spec_metrics import QUEUE_LABELLED, SERIES_NAMES, metric_names, selectors

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "conveyor.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def load() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' own nested panels (a collapsed row keeps them inside) included."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def query_panels() -> list[dict[str, Any]]:
    return [panel for panel in all_panels(load()["panels"]) if panel["type"] != "row"]


def expressions() -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in query_panels() for target in panel["targets"]]


def test_dashboard_is_a_grafana_dashboard_with_its_variables() -> None:
    dashboard = load()
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["uid"] and dashboard["title"] and dashboard["id"] is None
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    queue = variables["queue"]
    assert queue["type"] == "query" and queue["datasource"] == DATASOURCE
    assert queue["definition"] == queue["query"]["query"] == "label_values(conveyor_queue_jobs, queue)"
    assert queue["multi"] and queue["includeAll"] and queue["allValue"] == ".*"


def test_panel_ids_are_unique() -> None:
    ids = [panel["id"] for panel in all_panels(load()["panels"])]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_every_panel_queries_through_the_datasource_variable() -> None:
    panels = query_panels()
    assert len(panels) >= 25
    for panel in panels:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_panels_fit_the_grid_without_overlapping() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in all_panels(load()["panels"]):
        box = panel["gridPos"]
        assert box["x"] >= 0 and box["w"] > 0 and box["x"] + box["w"] <= 24, panel["title"]
        for x in range(box["x"], box["x"] + box["w"]):
            for y in range(box["y"], box["y"] + box["h"]):
                assert (x, y) not in taken, f"{panel['title']!r} overlaps {taken[x, y]!r}"
                taken[x, y] = panel["title"]


def test_queries_use_only_the_spec_metrics() -> None:
    used: set[str] = set()
    for title, expr in expressions():
        names = metric_names(expr)
        assert names, f"{title}: no metric found in {expr!r}"
        assert names <= SERIES_NAMES, f"{title} uses metrics outside the spec: {sorted(names - SERIES_NAMES)}"
        used |= names
    # The rows the dashboard promises, each seen through at least one of its metrics.
    for name in (
        "conveyor_queue_jobs",
        "conveyor_queue_jobs_completed_total",
        "conveyor_queue_wait_seconds_bucket",
        "conveyor_queue_run_seconds_bucket",
        "conveyor_queue_oldest_waiting_age_seconds",
        "conveyor_queue_workers",
        "conveyor_redis_memory_used_bytes",
        "conveyor_redis_connected_clients",
        "conveyor_redis_ops_per_second",
        "conveyor_worker_jobs_in_flight",
        "conveyor_worker_event_loop_lag_seconds",
        "conveyor_worker_threads_busy",
        "conveyor_worker_lease_renewals_total",
        "conveyor_worker_leases_lost_total",
        "conveyor_worker_stale_acks_total",
    ):
        assert name in used, f"no panel shows {name}"


def test_queue_labelled_series_follow_the_queue_variable() -> None:
    for title, expr in expressions():
        for name, matchers in selectors(expr):
            if name in QUEUE_LABELLED:
                assert 'queue=~"$queue"' in matchers, (
                    f"{title}: {name} ignores the queue variable in {expr!r}"
                )


def test_prometheus_parses_every_query(promtool: str, tmp_path: Path) -> None:
    # promtool parses rule expressions without a server: each query becomes a recording rule,
    # with Grafana's variables replaced by what Grafana would put there.
    rules = []
    for index, (title, expr) in enumerate(expressions()):
        concrete = expr.replace("$__rate_interval", "1m").replace("$queue", ".*")
        assert "$" not in concrete, f"{title}: an unknown Grafana variable in {expr!r}"
        rules.append({"record": f"dashboard:query_{index}", "expr": concrete})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr

"""The alerting rules of deploy/prometheus: Prometheus accepts them, and their unit tests pass.

promtool, from Debian's ``prometheus`` package (.ci/run installs it), does the checking; the
tests that need it are skipped without it. The rest read the YAML: every alert is tested both
firing and not firing, carries what an operator needs, and uses only the spec's metrics.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from conveyor.metrics.buckets import BOUNDS_SECONDS
from conveyor.metrics.exposition import Family, render

from spec_metrics import SERIES_NAMES, metric_names

RULES_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES = RULES_DIR / "conveyor-alerts.yml"
RULE_TESTS = RULES_DIR / "conveyor-alerts.test.yml"


def run(promtool: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], cwd=RULES_DIR, input=stdin, capture_output=True, text=True, timeout=60
    )


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]


def test_promtool_accepts_the_rules(promtool: str) -> None:
    result = run(promtool, "check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_rule_unit_tests_pass(promtool: str) -> None:
    result = run(promtool, "test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_an_exposition_of_the_spec_kinds(promtool: str) -> None:
    """Counters, gauges with labels and a histogram on the shared buckets, as Conveyor's own
    renderer writes them: promtool's linter finds nothing to say (names, suffixes, help)."""
    jobs = Family("conveyor_queue_jobs", "gauge", "Jobs of a queue by state.")
    jobs.add(3, (("queue", "mail"), ("state", "waiting")))
    completed = Family("conveyor_queue_jobs_completed", "counter", "Jobs completed, fleet-wide.")
    completed.add(12, (("queue", "mail"),))
    wait = Family("conveyor_queue_wait_seconds", "histogram", "Time from enqueued or due to started.")
    counts = [0.0] * (len(BOUNDS_SECONDS) + 1)
    counts[3], counts[-1] = 5, 1
    wait.histogram(BOUNDS_SECONDS, counts, 3600.5, (("queue", "mail"),))
    result = run(promtool, "check", "metrics", stdin=render([jobs, completed, wait]))
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_quiet() -> None:
    tested: dict[str, set[bool]] = {}
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            tested.setdefault(check["alertname"], set()).add(bool(check["exp_alerts"]))
    untested = {
        rule["alert"]: sorted(tested.get(rule["alert"], set()))
        for rule in alert_rules()
        if tested.get(rule["alert"]) != {True, False}
    }
    assert not untested, f"alerts without both a firing and a quiet check (have: True=firing): {untested}"


def test_every_alert_has_a_severity_a_duration_and_advice() -> None:
    rules = alert_rules()
    assert len(rules) >= 8
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert "for" in rule, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert len(rule["annotations"]["description"]) > 80, f"{rule['alert']}: say what to do"


def test_rules_use_only_the_spec_metrics() -> None:
    # `up` is Prometheus' own figure for a target: the one name from outside the spec.
    allowed = SERIES_NAMES | {"up"}
    used: set[str] = set()
    for rule in alert_rules():
        names = metric_names(rule["expr"])
        assert names, f"{rule['alert']}: no metric found in its expression"
        assert names <= allowed, f"{rule['alert']} uses metrics outside the spec: {sorted(names - allowed)}"
        used |= names
    for name in (
        "conveyor_queue_jobs",
        "conveyor_queue_jobs_failed_total",
        "conveyor_redis_eviction_policy_safe",
    ):
        assert name in used

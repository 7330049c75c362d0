"""``conveyor history``, run as a user runs it (a fresh process), against a real SQLite store
file filled through ``store.write``, and its search against the private PostgreSQL too."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conveyor.cli.history import duration, parse_states, parse_time
from conveyor.history import AttemptRecord, FinalState, JobRecord

from helpers import run_cli, stored_history

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime.now(UTC)
COUNT = 30


def make_records(now: datetime) -> list[JobRecord]:
    """Jobs finished 10 minutes apart, 5, 15, 25... minutes before ``now``, newest (``h-00``)
    first, so relative times (``--since 1h``) select a known part, 5 minutes from any edge;
    every third failed after a retry on worker ``w-retry``; and two that finished long ago,
    for ``prune``."""
    records = []
    for i in range(COUNT):
        finished = now - timedelta(minutes=10 * i + 5)
        failed = i % 3 == 0
        records.append(
            JobRecord(
                queue=("mail", "billing")[i % 2],
                id=f"h-{i:02d}",
                task=("app.send", "app.charge")[i % 2],
                state="failed" if failed else "completed",
                finished_at=finished,
                attempts=2 if failed else 1,
                arguments=json.dumps([[i], {"to": f"user-{i}@example.com"}]),
                result=None if failed else json.dumps({"ok": i}),
                error_type="TimeoutError" if failed else None,
                error_message=f"gateway [red]timed out[/red] for user-{i}" if failed else None,
                traceback="Traceback (most recent call last):\n  File app.py\nTimeoutError"
                if failed
                else None,
                group=f"tenant-{i % 2}",
                enqueued_at=finished - timedelta(seconds=3),
                started_at=finished - timedelta(milliseconds=1500),
                worker="w-1",
                attempt_log=(
                    (
                        AttemptRecord(
                            1, "retried", worker="w-retry", error_type="TimeoutError", error_message="slow"
                        ),
                        AttemptRecord(2, "failed", worker="w-1", error_type="TimeoutError"),
                    )
                    if failed
                    else (AttemptRecord(1, "completed", worker="w-1"),)
                ),
            )
        )
    for i, state in enumerate(("completed", "failed")):
        records.append(
            JobRecord(
                queue="mail",
                id=f"old-{i}",
                task="app.send",
                state=state,
                finished_at=now - timedelta(days=200, minutes=i),
            )
        )
    return records


RECORDS = make_records(NOW)
RECENT = RECORDS[:COUNT]


def fill(url: str) -> str:
    return stored_history(url, RECORDS)


@pytest.fixture(scope="module")
def history_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return fill(f"sqlite:///{tmp_path_factory.mktemp('history')}/history.db")


def run(*args: str, url: str | None, code: int | None = 0) -> subprocess.CompletedProcess[str]:
    """``conveyor history ARGS`` in a fresh process, with ``CONVEYOR_HISTORY_URL`` set to
    ``url`` (or unset); its exit code must be ``code`` (None: not checked)."""
    env = {**os.environ, "COLUMNS": "250"}
    env.pop("CONVEYOR_HISTORY_URL", None)
    if url is not None:
        env["CONVEYOR_HISTORY_URL"] = url
    result = subprocess.run(
        [sys.executable, "-m", "conveyor", "history", *args],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60,
    )  # fmt: skip
    if code is not None:
        assert result.returncode == code, result.stdout + result.stderr
    return result


def as_json(*args: str, url: str) -> Any:
    return json.loads(run(*args, "--json", url=url).stdout)


def ids(page: dict[str, Any]) -> list[str]:
    return [item["id"] for item in page["items"]]


def test_search_prints_a_table_and_where_the_next_page_starts(history_url: str) -> None:
    out = run("search", "--queue", "mail", "--limit", "5", url=history_url).stdout
    for header in ("id", "queue", "task", "state", "attempts", "finished (UTC)", "wait", "run", "error"):
        assert header in out
    shown = re.findall(r"│ (h-\d\d) ", out)
    assert shown == [r.id for r in RECENT if r.queue == "mail"][:5]
    assert "TimeoutError: gateway [red]timed out[/red] for user-0" in out  # markup shown as text
    assert "1.5 s" in out and "1.5 s" in out.split("h-00")[1].split("\n")[0]  # run time of the row
    assert re.search(r"^more: --cursor [A-Za-z0-9_-]+$", out, re.M)


def test_search_filters(history_url: str) -> None:
    def found(*args: str) -> list[str]:
        return ids(as_json("search", "--limit", "1000", *args, url=history_url))

    failed = [r.id for r in RECORDS if r.state == FinalState.FAILED]
    assert found("--state", "failed") == failed
    assert (
        found("-s", "failed", "-s", "completed")
        == found("--state", "failed,completed")
        == [r.id for r in RECORDS]
    )
    assert found("--task", "app.charge", "--state", "failed") == [
        r.id for r in RECENT if r.task == "app.charge" and r.state == "failed"
    ]
    assert found("--worker", "w-retry") == [r.id for r in RECENT if r.state == "failed"]
    assert found("--group", "tenant-1", "--queue", "billing") == [
        r.id for r in RECENT if r.queue == "billing"
    ]
    assert found("--text", "user-13@") == ["h-13"]
    assert found("--id", "h-04") == ["h-04"]
    assert found("--queue", "nowhere") == []
    assert "no finished jobs match" in run("search", "--queue", "nowhere", url=history_url).stdout


def test_relative_times(history_url: str) -> None:
    # h-00 finished 5 minutes ago, h-05 55 minutes ago, h-06 65 minutes ago.
    assert ids(as_json("search", "--since", "1h", url=history_url)) == [f"h-{i:02d}" for i in range(6)]
    window = ids(as_json("search", "--since", "2h", "--until", "30m", "--limit", "100", url=history_url))
    assert window == [f"h-{i:02d}" for i in range(3, 12)]
    assert ids(as_json("search", "--since", "1d", "--limit", "100", url=history_url)) == [
        r.id for r in RECENT
    ]
    assert ids(as_json("search", "--until", "7d", url=history_url)) == ["old-0", "old-1"]
    iso = (NOW - timedelta(minutes=30)).isoformat()
    assert ids(as_json("search", "--since", iso, url=history_url)) == ["h-00", "h-01", "h-02"]


def test_parse_time() -> None:
    now = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    assert parse_time("15m", "--since", now) == now - timedelta(minutes=15)
    assert parse_time("2h", "--since", now) == now - timedelta(hours=2)
    assert parse_time(" 7d ", "--since", now) == now - timedelta(days=7)
    assert parse_time("1.5h", "--since", now) == now - timedelta(minutes=90)
    assert parse_time("90s", "--since", now) == now - timedelta(seconds=90)
    assert parse_time("1w", "--since", now) == now - timedelta(days=7)
    assert parse_time("2026-03-01T08:00Z", "--since", now) == datetime(2026, 3, 1, 8, tzinfo=UTC)
    assert parse_time("2026-03-01T08:00:00", "--since", now) == datetime(2026, 3, 1, 8, tzinfo=UTC)
    assert parse_time("2026-03-01T09:00+01:00", "--since", now) == datetime(2026, 3, 1, 8, tzinfo=UTC)
    assert parse_time("2026-03-01", "--since", now) == datetime(2026, 3, 1, tzinfo=UTC)
    for bad in ("yesterday", "15", "m15", "-2h", "2 hours", ""):
        with pytest.raises(ValueError, match="--since"):
            parse_time(bad, "--since", now)
    with pytest.raises(ValueError, match="before the year 1"):
        parse_time("99999999w", "--since", now)
    assert parse_states(()) is None
    assert parse_states(("failed,Cancelled", "expired")) == [
        FinalState.FAILED,
        FinalState.CANCELLED,
        FinalState.EXPIRED,
    ]
    with pytest.raises(ValueError, match="finished jobs only"):
        parse_states(("waiting",))
    assert [duration(ms) for ms in (None, 12.4, 1500, 125_000, 3_720_000, 2 * 86_400_000)] == [
        "-", "12 ms", "1.5 s", "2m 05s", "1h 02m", "2d 00h",
    ]  # fmt: skip


def test_pages_via_cursor_without_repeats(history_url: str) -> None:
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = as_json("search", "--limit", "7", *(("--cursor", cursor) if cursor else ()), url=history_url)
        seen += ids(page)
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [r.id for r in RECORDS] and len(set(seen)) == len(seen) and pages == 5


def test_the_more_line_fixes_relative_times(history_url: str) -> None:
    """A cursor belongs to its search's exact filters: with --since 3h, the next page needs
    the time the first page used, which the 'more:' line gives."""
    out = run("search", "--since", "3h", "--limit", "4", url=history_url).stdout
    more = re.search(r"^more: (--cursor \S+ --since \S+)$", out, re.M)
    assert more, out
    following = run("search", "--limit", "4", "--json", *more.group(1).split(), url=history_url).stdout
    assert ids(json.loads(following)) == [f"h-{i:02d}" for i in range(4, 8)]
    # --json gives the resolved times beside next_cursor, for a script to follow the pages.
    first = as_json("search", "--since", "3h", "--limit", "4", url=history_url)
    assert first["until"] is None and datetime.fromisoformat(first["since"]) < NOW - timedelta(hours=2)
    again = ("--since", first["since"], "--cursor", first["next_cursor"], "--limit", "4")
    assert ids(as_json("search", *again, url=history_url)) == [f"h-{i:02d}" for i in range(4, 8)]
    # The cursor with other filters is refused, in one line.
    cursor_only = more.group(1).split()[:2]
    stale = run("search", "--since", "4h", "--limit", "4", *cursor_only, url=history_url, code=2)
    assert "other filters" in stale.stderr and "Traceback" not in stale.stderr


def test_show_one_job_with_its_attempts(history_url: str) -> None:
    out = run("show", "mail", "h-00", url=history_url).stdout
    for text in (
        "h-00",
        "app.send",
        "failed",
        '{"to": "user-0@example.com"}',
        "Traceback (most recent call last)",
    ):
        assert text in out
    assert "TimeoutError: gateway [red]timed out[/red] for user-0" in out
    attempts = out.split("Attempts")[1]
    assert re.search(r"│ 1\s+│ w-retry\s+│.*│ retried\s+│ TimeoutError: slow", attempts)
    assert re.search(r"│ 2\s+│ w-1\s+│.*│ failed\s+│ TimeoutError", attempts)
    data = as_json("show", "mail/h-00", url=history_url)
    assert data["state"] == "failed" and data["arguments"] == '[[0], {"to": "user-0@example.com"}]'
    assert [(a["attempt"], a["outcome"], a["worker"]) for a in data["attempt_log"]] == [
        (1, "retried", "w-retry"),
        (2, "failed", "w-1"),
    ]
    missing = run("show", "billing", "h-00", url=history_url, code=1)
    assert "no job 'h-00' of queue 'billing' in the history" in missing.stderr
    assert "Traceback" not in missing.stderr
    assert "QUEUE ID or QUEUE/ID" in run("show", "mail", url=history_url, code=2).stderr


def test_stats(history_url: str) -> None:
    out = run("stats", "--since", "1d", "--bucket", "day", url=history_url).stdout
    for header in (
        "start (UTC)",
        "queue",
        "task",
        "jobs",
        "failed",
        "failure rate",
        "wait p50/p95/p99",
        "run p50/p95/p99",
    ):
        assert header in out
    assert "app.charge" in out and "app.send" in out and "1.5 s / 1.5 s / 1.5 s" in out
    data = as_json("stats", "--since", "1d", "--bucket", "hour", "--queue", "mail", url=history_url)
    assert data["bucket"] == "hour" and {row["queue"] for row in data["rows"]} == {"mail"}
    assert sum(row["total"] for row in data["rows"]) == sum(1 for r in RECENT if r.queue == "mail")
    row = data["rows"][0]
    assert set(row["wait_ms"]) == {"p50", "p90", "p95", "p99"} and row["run_ms"]["p50"] == 1500
    assert sum(r["counts"]["failed"] for r in data["rows"]) == sum(
        1 for r in RECENT if r.queue == "mail" and r.state == "failed"
    )
    assert (
        "no jobs finished"
        in run("stats", "--since", "2030-01-01", "--until", "2030-01-02", url=history_url).stdout
    )
    assert (
        "more than 50000 buckets"
        in run("stats", "--since", "1000d", "--bucket", "minute", url=history_url, code=2).stderr
    )


def test_migrate_and_prune(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/new/history.db"
    first = run("migrate", url=url).stdout
    assert re.search(r"schema now at version \d+; applied: 0001_", first), first
    again = as_json("migrate", url=url)
    assert again["applied"] == [] and again["version"] >= 1
    assert "up to date" in run("migrate", url=url).stdout
    fill(url)
    pruned = run("prune", url=url).stdout
    assert re.search(r"│ completed\s+│ 30 days\s+│ 1\s+│", pruned), pruned
    assert re.search(r"│ failed\s+│ 90 days\s+│ 1\s+│", pruned), pruned
    assert as_json("prune", url=url)["deleted"] == {s.value: 0 for s in FinalState}
    assert len(as_json("search", "--limit", "1000", url=url)["items"]) == COUNT


@pytest.mark.parametrize(
    ("args", "url", "message"),
    [
        (("search",), None, "no history database named: pass --history-url sqlite:///"),
        (
            ("search", "--history-url", "mysql://u:secret@db/x"),
            None,
            "--history-url: history URL scheme 'mysql'",
        ),
        (("search",), "sqlite:///no/such/dir/history.db", "no history database at /"),
        (("search", "--state", "waiting"), "", "--state: 'waiting' is not a final state (the history holds"),
        (("search", "--state", "faild"), "", "use completed, failed, cancelled, expired, removed"),
        (("search", "--since", "yesterday"), "", "--since: 'yesterday' is neither an ISO 8601 time"),
        (("search", "--since", "1h", "--until", "2h"), "", "since must be before until"),
        (("search", "--cursor", "garbage"), "", "malformed cursor"),
        (("stats", "--until", "soon"), "", "--until: 'soon' is neither"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    history_url: str, args: tuple[str, ...], url: str | None, message: str
) -> None:
    result = run(*args, url=history_url if url == "" else url, code=2)
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "secret" not in result.stderr


def test_missing_url_says_how_to_set_it() -> None:
    result = run("stats", url=None, code=2)
    assert "--history-url" in result.stderr and "CONVEYOR_HISTORY_URL" in result.stderr
    assert not list(ROOT.glob("conveyor-history.db*")), "no default file is made"
    help_text = run("search", "--help", url=None).stdout
    assert "CONVEYOR_HISTORY_URL" in help_text


# ---------------------------------------------------------------- PostgreSQL
@pytest.fixture(scope="module")
def pg_history_url() -> Iterator[str]:
    """A private PostgreSQL (tests/history's helper, a server of this module's own), filled."""
    from history.conftest import PostgresServer

    server = PostgresServer().start()
    try:
        yield fill(server.create_database("cli_history"))
    finally:
        server.stop()


def test_search_and_show_on_postgres(pg_history_url: str) -> None:
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = as_json(
            "search", "--limit", "12", *(("--cursor", cursor) if cursor else ()), url=pg_history_url
        )
        seen += ids(page)
        if (cursor := page["next_cursor"]) is None:
            break
    assert seen == [r.id for r in RECORDS]
    assert ids(as_json("search", "--since", "1h", url=pg_history_url)) == [f"h-{i:02d}" for i in range(6)]
    assert ids(as_json("search", "--text", "user-13@", url=pg_history_url)) == ["h-13"]
    out = run("search", "--state", "failed", "--limit", "3", url=pg_history_url).stdout
    assert "h-00" in out and "h-03" in out and "more: --cursor" in out
    assert as_json("show", "mail", "h-00", url=pg_history_url)["attempt_log"][0]["worker"] == "w-retry"


def test_enable_backlog_and_disable_the_hand_off(url: str, queue: str) -> None:
    """The hand-off commands against a real Redis: a bound set, jobs held counted, history off."""
    from conveyor import Client, Tasks, Worker

    run_cli(url, "history", "enable", "--queue", queue, "--max-jobs", "3")
    tasks = Tasks(queue=queue)

    @tasks.task
    def noop(n: int) -> int:
        return n

    with Client.from_url(url) as client:
        client.enqueue_many([noop.call(n) for n in range(5)])
    Worker(tasks, url=url, burst=True).run()  # no history URL: nobody archives, the bound fills
    [row] = json.loads(run_cli(url, "history", "backlog", "--queue", queue, "--json").stdout)
    assert (row["enabled"], row["max_jobs"], row["jobs"], row["dropped"]) == (True, 3, 3, 2)
    assert row["oldest_age_seconds"] is not None
    table = run_cli(url, "history", "backlog", "--queue", queue).stdout
    assert queue in table and "on (max 3 jobs)" in table
    run_cli(url, "history", "disable", "--queue", queue)
    [row] = json.loads(run_cli(url, "history", "backlog", "--queue", queue, "--json").stdout)
    assert not row["enabled"] and row["jobs"] == 3, "what is held stays for the archivers"

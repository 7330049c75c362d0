"""Migrations: a fresh database, a re-run, processes starting at once; and open_store by URL."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conveyor.history import HistoryConfig, HistoryStore, JobRecord, SearchQuery, open_store, parse_url
from conveyor.history.migrations import load, split_sqlite

MakeJob = Callable[..., JobRecord]
T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
LATEST = {backend: len(load(backend)) for backend in ("sqlite", "postgres")}  # type: ignore[arg-type]


async def test_a_fresh_database_is_migrated_on_open(store_url: str, backend: str, make_job: MakeJob) -> None:
    async with await open_store(store_url, HistoryConfig(migrate=False)) as bare:
        first = await bare.migrate()
        assert first.version == LATEST[backend]
        assert first.applied[0] == "0001_initial"
        assert len(first.applied) == LATEST[backend]
        await bare.write([make_job("j")])
        again = await bare.migrate()
        assert again.applied == [] and again.version == LATEST[backend]
    # The next process to open it finds nothing to do, and the data intact.
    async with await open_store(store_url) as store:
        assert (await store.migrate()).applied == []
        assert await store.get("q", "j") is not None


_CHILD = """
import asyncio, json, sys
from conveyor.history import HistoryConfig, open_store

async def main():
    print("ready", flush=True)
    sys.stdin.readline()  # "go": every child starts migrating at the same moment
    store = await open_store(sys.argv[1], HistoryConfig(migrate=False))
    first = await store.migrate()
    again = await store.migrate()
    await store.close()
    print(json.dumps([first.applied, again.applied, again.version]), flush=True)

asyncio.run(main())
"""


def test_processes_migrating_at_once_apply_each_migration_once(store_url: str, backend: str) -> None:
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, store_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        outputs = [child.communicate(timeout=30) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    for child, (_, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    # Exactly one child applied everything; the others waited for it and found nothing to do.
    assert sorted(len(first) for first, _, _ in results) == [0, 0, LATEST[backend]], results
    assert all(again == [] and version == LATEST[backend] for _, again, version in results), results


async def test_postgres_without_trigrams_searches_whole_words(pg_server: object, make_job: MakeJob) -> None:
    url = pg_server.create_database("history_fulltext")  # type: ignore[attr-defined]
    async with await open_store(url, HistoryConfig(text_search="fulltext")) as store:
        assert (await store.migrate()).version == LATEST["postgres"]
        await store.write(
            [
                make_job("a", error_message="connection refused by upstream"),
                make_job("b", arguments='[["refusenik"], {}]'),
            ]
        )
        found = await store.search(SearchQuery(text="Refused"))
        assert [r.id for r in found.items] == ["a"]
        assert [r.id for r in (await store.search(SearchQuery(text="refusenik"))).items] == ["b"]


async def test_two_schemas_in_one_postgres_database_are_independent(
    pg_server: object, make_job: MakeJob
) -> None:
    url = pg_server.create_database("history_schemas")  # type: ignore[attr-defined]
    async with (
        await open_store(url) as one,
        await open_store(url, HistoryConfig(postgres_schema="history_two")) as two,
    ):
        await one.write([make_job("only-in-one")])
        assert await two.get("q", "only-in-one") is None
        assert await one.get("q", "only-in-one") is not None


def test_split_sqlite_keeps_triggers_whole() -> None:
    script = "CREATE TABLE t (a);\nCREATE TRIGGER x AFTER INSERT ON t BEGIN\n  SELECT 1;\n  SELECT 2;\nEND;\n"
    script += "-- a trailing comment\n"
    assert split_sqlite(script) == [
        "CREATE TABLE t (a);",
        "CREATE TRIGGER x AFTER INSERT ON t BEGIN\n  SELECT 1;\n  SELECT 2;\nEND;",
    ]


@pytest.mark.parametrize(
    ("url", "backend", "target"),
    [
        ("sqlite:///history.db", "sqlite", "history.db"),
        ("sqlite:////var/lib/conveyor/h.db", "sqlite", "/var/lib/conveyor/h.db"),
        ("sqlite:///:memory:", "sqlite", ":memory:"),
        ("SQLite:///a%20b.db", "sqlite", "a b.db"),
        ("postgresql://u:p@db:5433/jobs", "postgres", "postgresql://u:p@db:5433/jobs"),
        ("postgres://db/jobs", "postgres", "postgresql://db/jobs"),
        ("postgresql+psycopg://db/jobs?sslmode=require", "postgres", "postgresql://db/jobs?sslmode=require"),
    ],
)
def test_parse_url(url: str, backend: str, target: str) -> None:
    parsed = parse_url(url)
    assert (parsed.backend, parsed.target) == (backend, target)


@pytest.mark.parametrize(
    "url",
    ["mysql://u:secret@db/x", "sqlite://host/x.db", "sqlite://", "sqlite:///x.db?mode=ro", "postgresql://"],
)
def test_parse_url_refuses_without_repeating_the_url(url: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_url(url)
    assert "secret" not in str(info.value)


async def test_open_store_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, make_job: MakeJob
) -> None:
    path = tmp_path / "nested" / "dir" / "h.db"
    monkeypatch.setenv("CONVEYOR_HISTORY_URL", f"sqlite:///{path}")
    async with await open_store() as store:
        assert store.backend == "sqlite"
        await store.write([make_job("j")])
    assert path.exists()


async def test_open_store_defaults_to_sqlite_in_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CONVEYOR_HISTORY_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    async with await open_store():
        pass
    assert (tmp_path / "conveyor-history.db").exists()


async def test_open_store_picks_postgres_by_url(pg_server: object) -> None:
    url = pg_server.create_database("history_by_url")  # type: ignore[attr-defined]
    async with await open_store(url.replace("postgresql://", "postgres://")) as store:
        assert store.backend == "postgres"


async def test_in_memory_sqlite_serves_reads_and_writes(make_job: MakeJob) -> None:
    store: HistoryStore
    async with await open_store("sqlite:///:memory:") as store:
        await store.write([make_job("j")])
        assert (await store.get("q", "j")) is not None

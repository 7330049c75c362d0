"""Versioned schema migrations, one folder of SQL files per backend.

``NNNN_name.sql`` is version NNNN. A version may also have ``NNNN_name.fallback.sql``: the
runner tries the main file first (inside a savepoint) and applies the fallback if it fails --
how the text-search indexes use pg_trgm where it can be created and full-text search where it
cannot. The schema_version table records which of the two was applied, and the store reads
that to know how to search.

The runners (in each backend) apply every pending version in one transaction, under a lock
that serialises processes starting at once: ``pg_advisory_xact_lock`` on PostgreSQL,
``BEGIN IMMEDIATE`` on SQLite. ``{{schema}}`` in a PostgreSQL file is the configured schema.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from importlib import resources
from typing import Literal

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)(\.fallback)?\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str
    fallback: str | None = None

    def applied_name(self, used_fallback: bool) -> str:
        return f"{self.name}.fallback" if used_fallback else self.name


def load(backend: Literal["postgres", "sqlite"]) -> list[Migration]:
    """The migrations of ``backend``, by version; versions must run 1, 2, 3... without gaps."""
    main: dict[int, tuple[str, str]] = {}
    fallbacks: dict[int, str] = {}
    for entry in resources.files(__package__).joinpath(backend).iterdir():
        match = _NAME.match(entry.name)
        if match is None:
            continue
        version = int(match.group(1))
        text = entry.read_text(encoding="utf-8")
        if match.group(3):
            fallbacks[version] = text
        else:
            main[version] = (match.group(2), text)
    if sorted(main) != list(range(1, len(main) + 1)) or not set(fallbacks) <= set(main):
        raise RuntimeError(f"{backend} migrations are not numbered 1..n: {sorted(main)}")
    return [Migration(v, main[v][0], main[v][1], fallbacks.get(v)) for v in sorted(main)]


def split_sqlite(script: str) -> list[str]:
    """A script as single statements: ``executescript`` would commit the open transaction,
    and the migration must stay inside the one that holds the lock."""
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            if pending.strip().strip(";").strip():
                statements.append(pending.strip())
            pending = ""
    if any(line.strip() and not line.strip().startswith("--") for line in pending.splitlines()):
        raise ValueError(f"incomplete SQL statement at the end of a migration: {pending[:80]!r}")
    return statements

"""How the commands print: results to stdout, errors to stderr, and the table shapes they share."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


def table(title: str, columns: Iterable[str]) -> Table:
    """A titled table with plain columns, the shape of every listing."""
    made = Table(title=title)
    for column in columns:
        made.add_column(column)
    return made


def timestamp(moment: datetime | None, missing: str) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else missing


def error_text(error: Mapping[str, Any]) -> str:
    """A job's error on one line: ``Type: message``."""
    return f"{error.get('type')}: {error.get('message')}"

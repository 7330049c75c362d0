"""Tasks that run with isolation="process" (they must live at module level to be found)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from conveyor import Tasks

tasks = Tasks(queue="isolated")


@tasks.task(isolation="process")
def square(n: int) -> dict[str, int]:
    return {"square": n * n, "pid": os.getpid()}


@tasks.task(isolation="process")
async def async_square(n: int) -> int:
    return n * n


@tasks.task(isolation="process", timeout=1.0, retries=0)
def hang(pid_file: str) -> None:
    """Writes its pid, then blocks in a way no thread could be interrupted from."""
    Path(pid_file).write_text(str(os.getpid()))
    while True:
        time.sleep(0.05)


@tasks.task(isolation="process", retries=0)
def explode() -> None:
    raise KeyError("missing thing")


@tasks.task(isolation="process", retries=0)
def vanish() -> None:
    os._exit(7)

"""Enqueues are type-checked against the task's signature, whatever the task returns.

mypy runs with the project's config over ``enqueue_typing_cases.py``, a file of right and
deliberately wrong enqueues; each wrong one is marked with the error codes it must draw
(``# E: arg-type call-arg``), and nothing else in the file may draw an error. Issue 14:
an ``async def`` returning ``dict`` (any return or parameter type holding ``Any``) was
typed ``Task[Any, Any]``, and every enqueue of it passed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = Path(__file__).resolve().parent / "enqueue_typing_cases.py"
MARKER = re.compile(r"#\s*E:\s*(?P<codes>[\w\- ]+)$")
ERROR = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+): error: (?P<message>.*?)\s+\[(?P<code>[\w-]+)\]$")


def expected_errors() -> Counter[tuple[int, str]]:
    expected: Counter[tuple[int, str]] = Counter()
    for number, line in enumerate(CASES.read_text().splitlines(), start=1):
        marker = MARKER.search(line)
        if marker:
            expected.update((number, code) for code in marker["codes"].split())
    return expected


def test_enqueues_are_checked_against_the_task_signature(tmp_path: Path) -> None:
    assert sum(expected_errors().values()) > 50  # the markers were read
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(tmp_path / "mypy-cache"),
            "--no-pretty",
            "--no-error-summary",
            "--hide-error-context",
            str(CASES),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode in (0, 1), run.stdout + run.stderr  # 2: mypy itself failed
    got: Counter[tuple[int, str]] = Counter()
    messages: dict[int, list[str]] = {}
    for line in run.stdout.splitlines():
        error = ERROR.match(line)
        if error and Path(error["path"]).resolve() == CASES:
            got[(int(error["line"]), error["code"])] += 1
            messages.setdefault(int(error["line"]), []).append(error["message"])
    expected = expected_errors()
    missed = sorted((expected - got).elements())
    unexpected = sorted((got - expected).elements())
    assert not missed and not unexpected, (
        f"errors mypy did not report (line, code): {missed}\n"
        f"errors not expected: {[(n, c, messages[n]) for n, c in unexpected]}\n{run.stdout}"
    )

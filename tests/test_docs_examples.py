"""The documentation's examples run: every page of ``docs/``, its Python blocks in order.

The convention (for whoever writes a page):

* Every fenced block that opens with three backticks and ``python`` is an example that must
  run. A block that must not -- code of another library (the migration guides), a fragment
  that needs a module of its own, a pytest file -- has the HTML comment ``<!-- no-test -->``
  on the line right before its opening fence (Markdown does not render it).
* A page's blocks run in order, as one script, in a fresh interpreter: later blocks use what
  earlier ones defined, as a reader who types them into one session would. Fences may be
  indented (inside content tabs or admonitions); each block is dedented by its fence's
  indentation.
* The script runs with ``CONVEYOR_REDIS_URL`` pointing at the session's private server and
  ``CONVEYOR_PREFIX`` set to a key prefix of its own, so pages never see each other's queues
  or workers. An example that needs a worker runs one itself, in burst mode
  (``Worker(tasks, burst=True).run()`` drains the queues, then returns). A deprecation warning
  caused by the examples' own code is an error, so the docs never teach an API on its way out
  (one raised inside a dependency is left alone: the page is not at fault).

Examples state what they expect with ``assert``, so a page whose example still runs but no
longer does what its text says fails too.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
NO_TEST = "<!-- no-test -->"
PAGE_TIMEOUT = 60.0
KEPT = {"CONVEYOR_REDIS_URL", "CONVEYOR_PREFIX", "CONVEYOR_REDIS_SERVER"}

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^\n`]*)$")


@dataclass(frozen=True)
class Block:
    """One fenced Python block of a page: its code, dedented, and the line its code starts on."""

    line: int
    code: str


def python_blocks(text: str) -> list[Block]:
    """The runnable Python blocks of a Markdown page, in order (see the module docstring)."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        language = opening["info"].strip().split(" ", 1)[0].lstrip(".").lower()
        skipped = i > 0 and lines[i - 1].strip() == NO_TEST
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            closing = _FENCE.match(lines[j])
            if closing is not None and closing["fence"].startswith(fence) and not closing["info"].strip():
                break
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        else:
            raise ValueError(f"line {i + 1}: a fence that is never closed")
        if language in ("python", "py") and not skipped:
            blocks.append(Block(i + 2, textwrap.dedent("\n".join(body))))
        i = j + 1
    return blocks


def script_of(blocks: list[Block]) -> str:
    """The page's blocks as one script; each starts with a comment naming its line in the page."""
    return "\n\n".join(f"# --- docs line {block.line}\n{block.code}" for block in blocks) + "\n"


PAGES = sorted(DOCS.rglob("*.md"))
EXAMPLES = {page.relative_to(DOCS).as_posix(): python_blocks(page.read_text()) for page in PAGES}
"""Each page's runnable blocks; pages without any (the API reference, for one) are not run."""


def test_the_extractor_keeps_runnable_blocks_and_skips_marked_ones() -> None:
    page = textwrap.dedent(
        """\
        # A page

        ```python
        a = 1
        ```

        <!-- no-test -->
        ```python
        import celery
        ```

        ```sh
        conveyor info
        ```

        === "Conveyor"

            ```python
            if a:
                b = a + 1
            ```
        """
    )
    blocks = python_blocks(page)
    assert [block.code for block in blocks] == ["a = 1", "if a:\n    b = a + 1"]
    assert [block.line for block in blocks] == [4, 19]
    namespace: dict[str, object] = {}
    exec(compile(script_of(blocks), "page", "exec"), namespace)
    assert namespace["b"] == 2


def test_the_docs_have_examples_to_run() -> None:
    """A broken extractor (or a renamed folder) would make every page below pass vacuously."""
    assert len(PAGES) >= 20
    assert len(EXAMPLES["tutorial.md"]) >= 4
    assert sum(map(len, EXAMPLES.values())) >= 60


@pytest.mark.single_node("the examples run against the one plain server; a page may start its own")
@pytest.mark.parametrize("page", [name for name, blocks in EXAMPLES.items() if blocks])
def test_page_examples_run(page: str, url: str, tmp_path: Path) -> None:
    script = tmp_path / "page.py"
    script.write_text(script_of(EXAMPLES[page]))
    env = {
        **os.environ,
        "CONVEYOR_REDIS_URL": url,
        "CONVEYOR_PREFIX": f"docs-{uuid.uuid4().hex[:8]}",
    }
    for variable in [v for v in env if v.startswith("CONVEYOR_") and v not in KEPT]:
        del env[variable]  # the examples show the defaults, whatever the shell running the tests set
    try:
        done = subprocess.run(
            [sys.executable, "-W", "error::DeprecationWarning:__main__", str(script)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=PAGE_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{page}: the examples did not finish within {PAGE_TIMEOUT:g} s\n{exc.stderr}")
    if done.returncode != 0:
        numbered = "\n".join(f"{n:4} {line}" for n, line in enumerate(script.read_text().splitlines(), 1))
        pytest.fail(
            f"{page}: the examples failed (exit {done.returncode})\n"
            f"--- stderr\n{done.stderr[-6000:]}\n--- stdout\n{done.stdout[-2000:]}\n--- script\n{numbered}"
        )

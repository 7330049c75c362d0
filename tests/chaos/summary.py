"""Print the summary table of a ``make chaos`` run from its JSON-lines report.

``python tests/chaos/summary.py RESULTS.jsonl`` -> a Markdown table on stdout.
"""

from __future__ import annotations

import json
import sys
from typing import Any

COLUMNS = [
    ("run", "run"),
    ("jobs", "jobs|good"),
    ("kills / crashes", "kills|crashes|worker_exits|resets|archiver_kills"),
    ("restarts", "restarts"),
    ("lost", "lost"),
    ("reverted", "reverted"),
    ("stuck", "stuck"),
    ("duplicates (extra runs)", "extra_vs_plan|extra_executions|duplicated"),
    ("overlaps", "overlaps"),
    ("recovery p50 / max (s)", "redelivery_p50_s/redelivery_max_s"),
    ("resume / exit (s)", "resume_after_heal_s|workers_resumed_s|picked_up_after_s|exit_s"),
    ("time (s)", "elapsed_s"),
]


def cell(row: dict[str, Any], spec: str) -> str:
    if "/" in spec:
        parts = [cell(row, p) for p in spec.split("/")]
        return " / ".join(parts) if any(p != "" for p in parts) else ""
    for key in spec.split("|"):
        if row.get(key) is not None:
            value = row[key]
            return f"{value:,}" if isinstance(value, int) else str(value)
    return ""


def main(path: str) -> None:
    with open(path) as lines:
        rows = [json.loads(line) for line in lines if line.strip()]
    print("| " + " | ".join(title for title, _ in COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for row in rows:
        print("| " + " | ".join(cell(row, spec) for _, spec in COLUMNS) + " |")


if __name__ == "__main__":
    main(sys.argv[1])

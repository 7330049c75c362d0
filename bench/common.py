"""Shared helpers for the benchmark drivers in bench/peers/.

Standard library only: every driver imports this from its own peer's venv.

A driver is a small class (subclass of `Peer`) that knows how to enqueue jobs
and run a worker with one library; `main(PeerClass)` turns it into the common
command line:

    python bench/peers/<lib>_driver.py SCENARIO --redis-url URL --n N
        [--queue Q] [--concurrency C] [--processes P] [--variant V] [--max-seconds S]

and prints ONE JSON line with the measurements.  Scenarios:

    enqueue-sync   N single enqueues from sync code, one at a time
    enqueue-async  N enqueues from async code, 100 in flight
    enqueue-bulk   N enqueues through the library's bulk API, 1,000 a call
    drain          N pre-enqueued no-op jobs, P worker processes (--processes)
    correctness    like drain, then a settle pause; lost and duplicated job ids
    latency        idle worker, N jobs sent at 100/s carrying their send time
    io             N jobs that each wait 10 ms, C concurrent slots (--concurrency)
    failure        N jobs, every 5th raises on its first attempt; retried at once
    memory         Redis used_memory per waiting job (slope over N jobs)

How completion is counted (the same for every library): each job body calls
`done(i)`, which bumps this process's counter and a per-job run count in a
shared memory-mapped file (the "board").  No Redis command per job.  The driver
process polls the board every few ms, reads worker CPU and RSS from /proc and
Redis CPU from INFO, and computes rates, latency percentiles and exactly-once
counts from the board -- computed, never assumed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import mmap
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

SCENARIOS = (
    "enqueue-sync",
    "enqueue-async",
    "enqueue-bulk",
    "drain",
    "correctness",
    "latency",
    "io",
    "failure",
    "memory",
)
BULK_CHUNK = 1000
INFLIGHT = 100
LATENCY_RATE = 100.0  # jobs/s sent in the latency scenario
FAIL_EVERY = 5  # every 5th job (20 %) raises on its first attempt
SLEEP_S = 0.010  # the io scenario's per-job wait
POLL_S = 0.005  # how often the driver looks at the board
SUBSLOTS = 8  # board sub-slots per worker process (for pools of child processes)
MIN_CPU_S = 0.05  # below this the worker CPU figure is left out: too few clock ticks to mean much
BENCH_DIR = Path(__file__).resolve().parent
PEERS_DIR = BENCH_DIR / "peers"


# --------------------------------------------------------------------------- output


def emit(result: dict[str, Any]) -> None:
    """Print the one JSON line a driver reports."""
    sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
    sys.stdout.flush()


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100) of an unsorted list; None if empty."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))
    return s[k]


def rnd(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(x, digits)


# --------------------------------------------------------------------------- /proc


_CLK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def process_tree(pid: int) -> list[int]:
    """pid and all its live descendants."""
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += _children(p)
    return seen


def proc_cpu(pid: int) -> float:
    """CPU seconds (user+sys) of pid, its live descendants and its reaped children."""
    total = 0.0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is state (field 3); utime, stime, cutime, cstime are fields 14-17
        total += sum(int(x) for x in fields[11:15]) / _CLK
    return total


def proc_rss(pid: int) -> int:
    """Resident bytes of pid and its live descendants."""
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * _PAGE
        except OSError:
            pass
    return total


# --------------------------------------------------------------------------- Redis


class MiniRedis:
    """A tiny RESP client (stdlib only) for INFO and friends; not for the hot path."""

    def __init__(self, url: str) -> None:
        u = urlparse(url)
        self.sock = socket.create_connection((u.hostname or "127.0.0.1", u.port or 6379), timeout=10)
        self.f = self.sock.makefile("rb")
        if u.password:
            self.command("AUTH", u.password)
        db = (u.path or "/0").lstrip("/") or "0"
        if db != "0":
            self.command("SELECT", db)

    def command(self, *args: Any) -> Any:
        parts = [f"*{len(args)}\r\n".encode()]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
        self.sock.sendall(b"".join(parts))
        return self._read()

    def _read(self) -> Any:
        line = self.f.readline()
        kind, rest = line[:1], line[1:-2]
        if kind in (b"+", b"="):
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.f.read(n + 2)[:-2].decode(errors="replace")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise RuntimeError(f"unexpected reply {line!r}")

    def info(self, section: str) -> dict[str, str]:
        out = {}
        for line in self.command("INFO", section).splitlines():
            if ":" in line and not line.startswith("#"):
                k, v = line.split(":", 1)
                out[k] = v
        return out

    def cpu(self) -> float:
        i = self.info("cpu")
        return float(i["used_cpu_user"]) + float(i["used_cpu_sys"])

    def used_memory(self) -> int:
        return int(self.info("memory")["used_memory"])

    def close(self) -> None:
        self.sock.close()


# --------------------------------------------------------------------------- the board


class Board:
    """Shared-memory tally, one file per measured run.

    It has `slots` sub-slots; every OS process that runs jobs claims one of its
    own (held by an flock for the process's life, so RQ's one-process-per-job
    horses reuse one and Celery's prefork children get one each) and writes only
    there: per sub-slot a count, first/last completion time and the worker it
    belongs to; per sub-slot and job id a run count and an attempt count.  The
    pickup latency per job id is shared (each id is written by whoever ran it)."""

    def __init__(self, path: str, n: int = 0, slots: int = 0, create: bool = False) -> None:
        if create:
            size = 16 + slots * 32 + 2 * slots * n + 8 * n
            with open(path, "wb") as f:
                f.truncate(size)
        self.path = path
        self.fd = os.open(path, os.O_RDWR)
        self.mm = mmap.mmap(self.fd, 0)
        if create:
            struct.pack_into("qq", self.mm, 0, n, slots)
        self.n, self.slots = struct.unpack_from("qq", self.mm, 0)
        n, s = self.n, self.slots
        mv = memoryview(self.mm)
        self.stats = mv[16 : 16 + s * 32].cast("d")  # per sub-slot: count, first, last, worker+1
        off = 16 + s * 32
        self.runs = mv[off : off + s * n].cast("B")
        off += s * n
        self.attempts = mv[off : off + s * n].cast("B")
        off += s * n
        self.lat = mv[off : off + 8 * n].cast("d")

    def worker(self, w: int) -> tuple[int, float, float]:
        """(count, first completion, last completion) of worker process w and its children."""
        st, count, first, last = self.stats, 0, float("inf"), 0.0
        for k in range(self.slots):
            if st[k * 4 + 3] == w + 1 and st[k * 4]:
                count += int(st[k * 4])
                first, last = min(first, st[k * 4 + 1]), max(last, st[k * 4 + 2])
        return count, first, last

    def total(self) -> int:
        return sum(int(self.stats[k * 4]) for k in range(self.slots))

    def run_counts(self, ids: Iterable[int]) -> list[int]:
        n, r = self.n, self.runs
        return [sum(r[k * n + i] for k in range(self.slots)) for i in ids]

    def attempt_counts(self, ids: Iterable[int]) -> list[int]:
        n, a = self.n, self.attempts
        return [sum(a[k * n + i] for k in range(self.slots)) for i in ids]


class _Slot:
    """The worker side of the board: this process's own sub-slot."""

    def __init__(self) -> None:
        import fcntl

        self.board = b = Board(os.environ["BENCH_BOARD"])
        for k in range(b.slots):
            fd = os.open(f"{b.path}.lock{k}", os.O_CREAT | os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.lock_fd, self.k = fd, k  # held until this process exits
            break
        else:
            raise RuntimeError("bench board: no free slot (more job-running processes than slots)")
        n, k = b.n, self.k
        self.st = b.stats[k * 4 : k * 4 + 4]
        self.st[3] = int(os.environ["BENCH_SLOT"]) + 1
        self.runs = b.runs[k * n : (k + 1) * n]
        self.attempts = b.attempts[k * n : (k + 1) * n]
        self.lat = b.lat
        self.lock = threading.Lock()


_slot: _Slot | None = None
_slot_lock = threading.Lock()


def _forget_slot() -> None:  # a forked child claims its own
    global _slot, _slot_lock
    _slot, _slot_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_slot)


def _my_slot() -> _Slot:
    global _slot
    if _slot is None:
        with _slot_lock:
            if _slot is None:
                _slot = _Slot()
    return _slot


def done(i: int, sent: float = 0.0) -> None:
    """Call at the end of every job body: job i ran (once more) in this process.
    `sent` (time.time() at enqueue) records pickup latency for the latency scenario."""
    s = _slot or _my_slot()
    now = time.monotonic()
    with s.lock:
        if sent:
            s.lat[i] = time.time() - sent
        st = s.st
        if st[1] == 0:
            st[1] = now
        st[0] += 1
        st[2] = now
        if s.runs[i] < 255:
            s.runs[i] += 1


def begin() -> None:
    """Call at the start of a job body that waits (the io scenario): its start, not its
    completion, opens this process's measured interval."""
    s = _slot or _my_slot()
    if s.st[1] == 0:
        s.st[1] = time.monotonic()


def should_fail(i: int) -> bool:
    """Record an attempt of job i; True on the first attempt of every 5th job."""
    s = _slot or _my_slot()
    b = s.board
    with s.lock:
        before = sum(b.attempts[k * b.n + i] for k in range(b.slots))
        if s.attempts[i] < 255:
            s.attempts[i] += 1
    return i % FAIL_EVERY == 0 and before == 0


class Flake(Exception):
    """What a failing job raises (drivers map it onto their library's retry)."""


# --------------------------------------------------------------------------- workers


class Workers:
    """Worker processes of this driver (`<driver> worker ...`), one board slot each."""

    def __init__(self, args: argparse.Namespace, kind: str, n: int, processes: int, concurrency: int) -> None:
        self.tmp = tempfile.mkdtemp(prefix="bench-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        self.board = Board(os.path.join(self.tmp, "board"), n=n, slots=SUBSLOTS * processes, create=True)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[str] = []
        for slot in range(processes):
            log = os.path.join(self.tmp, f"worker{slot}.log")
            self.logs.append(log)
            cmd = [
                sys.executable,
                os.path.abspath(sys.argv[0]),
                "worker",
                "--kind",
                kind,
                "--redis-url",
                args.redis_url,
                "--queue",
                args.queue,
                "--concurrency",
                str(concurrency),
                "--variant",
                args.variant,
                "--n",
                str(n),
            ]
            # PYTHONPATH: job modules are imported by name in worker (and child) processes
            path = os.pathsep.join([str(PEERS_DIR), str(BENCH_DIR), os.environ.get("PYTHONPATH", "")])
            env = dict(os.environ, BENCH_BOARD=self.board.path, BENCH_SLOT=str(slot), PYTHONPATH=path)
            with open(log, "wb") as lf:
                self.procs.append(
                    subprocess.Popen(
                        cmd, env=env, stdout=lf, stderr=subprocess.STDOUT, start_new_session=True
                    )
                )
        self.t_launch = time.monotonic()

    def dead(self) -> str | None:
        for p, log in zip(self.procs, self.logs, strict=True):
            if p.poll() is not None:
                tail = Path(log).read_text(errors="replace")[-1500:]
                return f"worker exited with {p.returncode}: {tail}"
        return None

    def wait(
        self, target: int, redis: MiniRedis | None, max_seconds: float, startup_s: float = 60.0
    ) -> dict[str, Any]:
        """Poll the board until `target` completions; sample CPU at each worker's
        first completion and at the end.  Stops early on a stall or max_seconds."""
        b, workers = self.board, range(len(self.procs))
        stall_s = min(20.0, max_seconds)
        cpu0: dict[int, tuple[float, int]] = {}  # per worker: CPU and count at its first completion
        redis0: tuple[float, int] | None = None
        last_total, last_change, status = -1, time.monotonic(), "ok"
        t_first_seen = None
        while True:
            counts = [b.worker(w)[0] for w in workers]
            total = sum(counts)
            now = time.monotonic()
            for w in workers:
                if counts[w] and w not in cpu0:
                    cpu0[w] = (proc_cpu(self.procs[w].pid), b.worker(w)[0])
            if total and redis0 is None:
                redis0 = (redis.cpu() if redis else 0.0, b.total())
                t_first_seen = now
            if total >= target:
                break
            if total != last_total:
                last_total, last_change = total, now
            if total == 0 and now - self.t_launch > startup_s:
                status = f"no job completed within {startup_s:.0f}s"
                break
            if total and now - last_change > stall_s:
                status = f"stalled at {total} of {target}"
                break
            if t_first_seen is not None and now - t_first_seen > max_seconds:
                status = "capped"
                break
            err = self.dead()
            if err:
                status = err
                break
            time.sleep(POLL_S)
        stats = [b.worker(w) for w in workers]
        cpu1 = {w: proc_cpu(self.procs[w].pid) for w in workers}
        rss = sum(proc_rss(p.pid) for p in self.procs)
        total = sum(c for c, _, _ in stats)
        out: dict[str, Any] = {"completed": total, "status": status}
        if status not in ("ok", "capped"):
            out["worker_log"] = Path(self.logs[0]).read_text(errors="replace")[-1500:]
        if total >= 2:
            first = min(f for c, f, _ in stats if c)
            last = max(la for c, _, la in stats if c)
            out["elapsed_s"] = rnd(last - first, 4)
            out["jobs_per_s"] = rnd((total - 1) / (last - first), 1) if last > first else None
            out["startup_s"] = rnd(first - self.t_launch, 3)
            wjobs = sum(stats[w][0] - cpu0[w][1] for w in cpu0)
            wcpu = sum(cpu1[w] - cpu0[w][0] for w in cpu0)
            out["worker_cpu_s"] = rnd(wcpu, 3)
            if wjobs > 0 and wcpu >= MIN_CPU_S:  # /proc counts in 10 ms ticks
                out["worker_cpu_s_per_1k"] = rnd(wcpu / wjobs * 1000, 4)
            if redis and redis0 and total > redis0[1]:
                out["redis_cpu_s_per_1k"] = rnd((redis.cpu() - redis0[0]) / (total - redis0[1]) * 1000, 4)
        out["worker_rss_mb"] = rnd(rss / 2**20, 1)
        return out

    def stop(self) -> None:
        """Kill the workers and everything they started (measurements are already taken)."""
        for p in self.procs:
            for pid in process_tree(p.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for p in self.procs:
            p.wait()

    def cleanup(self) -> None:
        for f in os.listdir(self.tmp):
            os.unlink(os.path.join(self.tmp, f))
        os.rmdir(self.tmp)


def exactly_once(board: Board, ids: Iterable[int]) -> dict[str, int]:
    runs = board.run_counts(ids)
    return {"lost": sum(1 for r in runs if r == 0), "duplicated": sum(1 for r in runs if r > 1)}


# --------------------------------------------------------------------------- drivers


class Peer:
    """Base class for a driver.  Override what the library has; leave the rest.

    Job kinds: "noop" (done(i, sent)), "sleep" (wait 10 ms, then done(i)),
    "flaky" (if should_fail(i): raise -> library retry, delay 0; else done(i))."""

    name = "?"
    version = "?"
    #: variant name -> human-readable settings; the first is the default
    variants: dict[str, str] = {"default": "library defaults"}
    #: default concurrency (slots per worker process) for drain/latency/failure
    concurrency = 1
    #: concurrency for the io scenario (None: the library cannot run 200 slots in one process)
    io_concurrency: int | None = 200
    has_sync = False
    has_async = False
    has_bulk = False

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.queue = args.queue
        self.url = args.redis_url
        self.variant = args.variant

    # producer side
    def enqueue(self, kind: str, i: int, sent: float = 0.0) -> None:
        raise NotImplementedError

    async def aopen(self) -> None:
        """Create async clients (called inside the event loop)."""

    async def aclose(self) -> None:
        """Close async clients."""

    async def aenqueue(self, kind: str, i: int, sent: float = 0.0) -> None:
        raise NotImplementedError

    def bulk(self, kind: str, ids: range) -> None:
        """Enqueue ids in one bulk call (may be `async def`: then aopen/aclose wrap it)."""
        raise NotImplementedError

    def close(self) -> None:
        """Close sync clients."""

    # worker side
    def work(self, kind: str, concurrency: int) -> None:
        """Run a worker for job kind in this process until killed."""
        raise NotImplementedError


def _bulk(peer: Peer, kind: str, ids: range) -> float:
    """Enqueue ids through peer.bulk (sync or async) in chunks; returns seconds taken."""
    chunks = [range(k, min(k + BULK_CHUNK, ids.stop)) for k in range(ids.start, ids.stop, BULK_CHUNK)]
    if not asyncio.iscoroutinefunction(peer.bulk):
        t = time.perf_counter()
        for c in chunks:
            peer.bulk(kind, c)
        return time.perf_counter() - t

    async def go() -> float:
        await peer.aopen()
        try:
            t = time.perf_counter()
            for c in chunks:
                await peer.bulk(kind, c)
            return time.perf_counter() - t
        finally:
            await peer.aclose()

    return asyncio.run(go())


async def _inflight(peer: Peer, kind: str, ids: range, inflight: int) -> None:
    it = iter(ids)

    async def lane() -> None:
        for i in it:
            await peer.aenqueue(kind, i)

    await asyncio.gather(*(lane() for _ in range(inflight)))


def fill(
    peer: Peer, kind: str, ids: range, inflight: int = INFLIGHT, prefer_single_connection: bool = False
) -> str:
    """Enqueue ids the fastest way the library offers (untimed setup); returns how."""
    if peer.has_bulk:
        _bulk(peer, kind, ids)
        return "bulk"
    if peer.has_async and not (prefer_single_connection and peer.has_sync):

        async def go() -> None:
            await peer.aopen()
            try:
                await _inflight(peer, kind, ids, 1 if prefer_single_connection else inflight)
            finally:
                await peer.aclose()

        asyncio.run(go())
        return "async"
    for i in ids:
        peer.enqueue(kind, i)
    return "sync"


def _paced_send(peer: Peer, ids: range, rate: float) -> None:
    """Send ids at `rate` per second, each carrying its send time."""
    gap = 1.0 / rate
    if peer.has_async:

        async def go() -> None:
            await peer.aopen()
            try:
                t0 = time.monotonic()
                for k, i in enumerate(ids):
                    delay = t0 + k * gap - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    await peer.aenqueue("noop", i, time.time())
            finally:
                await peer.aclose()

        asyncio.run(go())
        return
    t0 = time.monotonic()
    for k, i in enumerate(ids):
        delay = t0 + k * gap - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        peer.enqueue("noop", i, time.time())


def _parse(peer_cls: type[Peer], argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=f"{peer_cls.name} benchmark driver")
    ap.add_argument("scenario", choices=(*SCENARIOS, "worker", "info"))
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--queue", default="bench")
    ap.add_argument("--concurrency", type=int, default=None, help="slots per worker process")
    ap.add_argument("--processes", type=int, default=1, help="worker processes (drain, correctness)")
    ap.add_argument("--variant", default=next(iter(peer_cls.variants)), choices=list(peer_cls.variants))
    ap.add_argument("--max-seconds", type=float, default=60.0, help="cap on one measured phase")
    ap.add_argument("--kind", default="noop", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(peer_cls: type[Peer], argv: list[str] | None = None) -> None:
    args = _parse(peer_cls, argv)
    peer = peer_cls(args)
    if args.scenario == "worker":
        peer.work(args.kind, args.concurrency or peer.concurrency)
        return
    sc, n = args.scenario, args.n
    conc = args.concurrency or (peer.io_concurrency if sc == "io" else peer.concurrency)
    res: dict[str, Any] = {
        "lib": peer.name,
        "version": peer.version,
        "variant": args.variant,
        "settings": peer.variants[args.variant],
        "scenario": sc,
        "n": n,
        "python": sys.version.split()[0],
    }
    if sc == "info":
        emit(res)
        return
    redis = MiniRedis(args.redis_url)
    try:
        res.update(_run(peer, args, sc, n, conc, redis))
    except Exception as e:  # report, don't crash: one JSON line either way
        res["error"] = f"{type(e).__name__}: {e}"[:2000]
    finally:
        redis.close()
    emit(res)
    os._exit(0)  # don't wait for threads a library left behind


def _run(
    peer: Peer, args: argparse.Namespace, sc: str, n: int, conc: int | None, redis: MiniRedis
) -> dict[str, Any]:
    ids = range(n)
    if sc == "enqueue-sync":
        if not peer.has_sync:
            return {"skipped": "no sync enqueue API"}
        t = time.perf_counter()
        for i in ids:
            peer.enqueue("noop", i)
        dt = time.perf_counter() - t
        peer.close()
        return {"jobs_per_s": rnd(n / dt, 1), "elapsed_s": rnd(dt, 4)}
    if sc == "enqueue-async":
        if not peer.has_async:
            return {"skipped": "no async enqueue API"}

        async def go() -> float:
            await peer.aopen()
            try:
                t = time.perf_counter()
                await _inflight(peer, "noop", ids, INFLIGHT)
                return time.perf_counter() - t
            finally:
                await peer.aclose()

        dt = asyncio.run(go())
        return {"jobs_per_s": rnd(n / dt, 1), "elapsed_s": rnd(dt, 4), "inflight": INFLIGHT}
    if sc == "enqueue-bulk":
        if not peer.has_bulk:
            return {"skipped": "no bulk enqueue API"}
        dt = _bulk(peer, "noop", ids)
        peer.close()
        return {"jobs_per_s": rnd(n / dt, 1), "elapsed_s": rnd(dt, 4), "chunk": BULK_CHUNK}
    if sc == "memory":
        warm = max(100, n // 10)
        m0 = redis.used_memory()
        how = fill(peer, "noop", range(warm), prefer_single_connection=True)
        m1 = redis.used_memory()
        fill(peer, "noop", range(warm, warm + n), prefer_single_connection=True)
        m2 = redis.used_memory()
        peer.close()
        return {
            "bytes_per_job": rnd((m2 - m1) / n, 1),
            "first_jobs_bytes": m1 - m0,
            "enqueued_with": how,
        }
    if sc == "io" and conc is None:
        return {"skipped": "runs one job at a time per process"}

    kind = {"io": "sleep", "failure": "flaky"}.get(sc, "noop")
    procs = args.processes if sc in ("drain", "correctness") else 1
    out: dict[str, Any] = {"processes": procs, "concurrency": conc}
    if sc == "latency":
        w = Workers(args, "noop", n + 1, procs, conc or 1)
        try:
            fill(peer, "noop", range(1))  # warm-up job 0: worker connected and idle after it
            first = w.wait(1, None, args.max_seconds)
            if first["completed"] < 1:
                return {**out, "error": first["status"]}
            time.sleep(1.0)
            # CPU spent meanwhile: a worker that polls instead of blocking picks up sooner
            # (its CPU never goes idle), and that is worth seeing beside its latency.
            wcpu0, rcpu0, t0 = sum(proc_cpu(p.pid) for p in w.procs), redis.cpu(), time.monotonic()
            _paced_send(peer, range(1, n + 1), LATENCY_RATE)
            r = w.wait(n + 1, None, args.max_seconds)
            seconds = time.monotonic() - t0
            wcpu, rcpu = sum(proc_cpu(p.pid) for p in w.procs) - wcpu0, redis.cpu() - rcpu0
        finally:
            w.stop()
        lat = [w.board.lat[i] * 1000 for i in range(1, n + 1) if _ran(w.board, i)]
        out.update(status=r["status"], completed=r["completed"] - 1, **exactly_once(w.board, range(1, n + 1)))
        out.update({f"p{p}_ms": rnd(percentile(lat, p), 2) for p in (50, 95, 99)})
        out["max_ms"] = rnd(max(lat), 2) if lat else None
        out["rate_per_s"] = LATENCY_RATE
        out["worker_cpu_pct"] = rnd(100 * wcpu / seconds, 1)
        out["redis_cpu_pct"] = rnd(100 * rcpu / seconds, 1)
        w.cleanup()
        return out

    how = fill(peer, kind, ids)
    peer.close()
    w = Workers(args, kind, n, procs, conc or 1)
    try:
        # a correctness run must finish to count anything: it gets 5x the cap
        r = w.wait(n, redis, args.max_seconds * (5 if sc == "correctness" else 1))
        if sc == "correctness" and r["status"] == "ok":
            time.sleep(1.0)  # let any duplicate delivery show up
    finally:
        w.stop()
    out.update(r, prefilled_with=how)
    if r["status"] == "ok":
        out.update(exactly_once(w.board, ids))
    if sc == "failure":
        out["retried"] = sum(1 for a in w.board.attempt_counts(ids) if a >= 2)
        out["expected_retried"] = len(range(0, n, FAIL_EVERY))
    w.cleanup()
    return out


def _ran(board: Board, i: int) -> bool:
    return any(board.runs[k * board.n + i] for k in range(board.slots))


def lib_version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def sync_sleep() -> None:
    time.sleep(SLEEP_S)


async def async_sleep() -> None:
    await asyncio.sleep(SLEEP_S)

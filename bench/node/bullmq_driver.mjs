// BullMQ (Node.js) driver for the Conveyor benchmark: the same command line and
// JSON line as the Python drivers (see bench/common.py for the scenarios).
//
//   node bench/node/bullmq_driver.mjs SCENARIO --redis-url URL --n N [--queue Q]
//        [--concurrency C] [--processes P] [--max-seconds S]
//
// Completion counting: each worker process counts in memory (count, first/last
// completion time, per-job run counts) and reports to this process over the
// fork() IPC channel every 5 ms and on request at the end; no Redis command per
// job.  Times are CLOCK_MONOTONIC (process.hrtime), shared by all processes.
import { fork } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Queue, Worker } from 'bullmq';
import IORedis from 'ioredis';

const SCENARIOS = ['enqueue-sync', 'enqueue-async', 'enqueue-bulk', 'drain', 'correctness', 'latency', 'io', 'failure', 'memory'];
const BULK_CHUNK = 1000;
const INFLIGHT = 100;
const LATENCY_RATE = 100;
const FAIL_EVERY = 5;
const POLL_MS = 5;
const SETTINGS = 'Worker(concurrency=100; 200 for io), default job options (completed jobs kept)';

const here = fileURLToPath(import.meta.url);
const pkg = (name) => JSON.parse(fs.readFileSync(path.join(path.dirname(here), 'node_modules', name, 'package.json')));
const nowMs = () => Number(process.hrtime.bigint()) / 1e6;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const rnd = (x, d = 3) => (x === null || x === undefined || !Number.isFinite(x) ? null : Math.round(x * 10 ** d) / 10 ** d);

function parseArgs(argv) {
  const a = { scenario: argv[0], redisUrl: 'redis://127.0.0.1:6379/0', n: 1000, queue: 'bench', concurrency: null,
    processes: 1, variant: 'default', maxSeconds: 60, kind: 'noop' };
  const map = { '--redis-url': 'redisUrl', '--n': 'n', '--queue': 'queue', '--concurrency': 'concurrency',
    '--processes': 'processes', '--variant': 'variant', '--max-seconds': 'maxSeconds', '--kind': 'kind' };
  for (let k = 1; k < argv.length; k += 2) {
    const key = map[argv[k]];
    if (!key) throw new Error(`unknown option ${argv[k]}`);
    a[key] = ['n', 'concurrency', 'processes', 'maxSeconds'].includes(key) ? Number(argv[k + 1]) : argv[k + 1];
  }
  if (![...SCENARIOS, 'worker', 'info'].includes(a.scenario)) throw new Error(`unknown scenario ${a.scenario}`);
  const u = new URL(a.redisUrl);
  a.connection = { host: u.hostname, port: Number(u.port || 6379), db: Number(u.pathname.slice(1) || 0), maxRetriesPerRequest: null };
  return a;
}

function emit(obj) {
  const sorted = Object.fromEntries(Object.keys(obj).sort().map((k) => [k, obj[k]]));
  process.stdout.write(JSON.stringify(sorted) + '\n');
}

function percentile(values, p) {
  if (!values.length) return null;
  const s = [...values].sort((x, y) => x - y);
  return s[Math.max(0, Math.min(s.length - 1, Math.ceil((p * s.length) / 100) - 1))];
}

// ---------------------------------------------------------------- /proc
const CLK = 100; // USER_HZ on Linux
const PAGE = 4096;
function tree(pid) {
  const out = [];
  const todo = [pid];
  while (todo.length) {
    const p = todo.pop();
    out.push(p);
    try {
      for (const t of fs.readdirSync(`/proc/${p}/task`)) {
        todo.push(...fs.readFileSync(`/proc/${p}/task/${t}/children`, 'utf8').split(/\s+/).filter(Boolean).map(Number));
      }
    } catch {}
  }
  return out;
}
function procCpu(pid) {
  let t = 0;
  for (const p of tree(pid)) {
    try {
      const f = fs.readFileSync(`/proc/${p}/stat`, 'utf8').split(')').pop().trim().split(/\s+/);
      t += f.slice(11, 15).reduce((s, x) => s + Number(x), 0) / CLK;
    } catch {}
  }
  return t;
}
function procRss(pid) {
  let t = 0;
  for (const p of tree(pid)) {
    try { t += Number(fs.readFileSync(`/proc/${p}/statm`, 'utf8').split(' ')[1]) * PAGE; } catch {}
  }
  return t;
}
async function redisInfo(r, section) {
  const out = {};
  for (const line of (await r.info(section)).split(/\r?\n/)) {
    const k = line.indexOf(':');
    if (k > 0 && !line.startsWith('#')) out[line.slice(0, k)] = line.slice(k + 1);
  }
  return out;
}
async function redisCpu(r) {
  const i = await redisInfo(r, 'cpu');
  return Number(i.used_cpu_user) + Number(i.used_cpu_sys);
}

// ---------------------------------------------------------------- worker process
async function runWorker(a) {
  const n = a.n;
  const st = { count: 0, first: 0, last: 0 };
  const runs = new Uint8Array(n);
  const attempts = new Uint8Array(n);
  const lat = new Float64Array(n);
  const done = (i, sent) => {
    const now = nowMs();
    if (sent) lat[i] = now - sent;
    if (st.first === 0) st.first = now;
    st.count += 1;
    st.last = now;
    if (runs[i] < 255) runs[i] += 1;
  };
  const processor = async (job) => {
    const { i, sent } = job.data;
    if (job.name === 'sleep') {
      if (st.first === 0) st.first = nowMs(); // the io interval opens at the first start
      await sleep(10);
    }
    else if (job.name === 'flaky') {
      attempts[i] += 1; // one worker process in the failure scenario, so this count is global
      if (i % FAIL_EVERY === 0 && attempts[i] === 1) throw new Error('flake');
    }
    done(i, sent || 0);
  };
  new Worker(a.queue, processor, { connection: a.connection, concurrency: a.concurrency });
  let reported = -1;
  setInterval(() => {
    if (st.count !== reported) {
      reported = st.count;
      process.send({ t: 'p', ...st });
    }
  }, POLL_MS);
  process.on('message', (m) => {
    if (m === 'dump') {
      process.send({ t: 'd', ...st, runs: Buffer.from(runs).toString('base64'),
        attempts: Buffer.from(attempts).toString('base64'), lat: Buffer.from(lat.buffer).toString('base64') });
    }
  });
}

class Workers {
  constructor(a, kind, n, processes, concurrency) {
    this.dir = fs.mkdtempSync(path.join(fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), 'bench-node-'));
    this.stats = [];
    this.dumps = [];
    this.procs = [];
    this.logs = [];
    for (let w = 0; w < processes; w++) {
      const log = path.join(this.dir, `worker${w}.log`);
      const fd = fs.openSync(log, 'w');
      const args = ['worker', '--kind', kind, '--redis-url', a.redisUrl, '--queue', a.queue, '--n', String(n),
        '--concurrency', String(concurrency)];
      const p = fork(here, args, { stdio: ['ignore', fd, fd, 'ipc'] });
      this.stats.push({ count: 0, first: 0, last: 0 });
      p.on('message', (m) => {
        if (m.t === 'p') this.stats[w] = m;
        else if (m.t === 'd') this.dumps[w](m);
      });
      this.procs.push(p);
      this.logs.push(log);
    }
    this.tLaunch = nowMs();
  }

  dead() {
    for (let w = 0; w < this.procs.length; w++) {
      const p = this.procs[w];
      if (p.exitCode !== null || p.signalCode !== null) {
        return `worker exited with ${p.exitCode ?? p.signalCode}: ${fs.readFileSync(this.logs[w], 'utf8').slice(-1500)}`;
      }
    }
    return null;
  }

  async wait(target, redis, maxSeconds) {
    const startupMs = 60000;
    const stallMs = Math.min(20, maxSeconds) * 1000;
    const cpu0 = new Map();
    let redis0 = null;
    let tFirst = null;
    let lastTotal = -1;
    let lastChange = nowMs();
    let status = 'ok';
    for (;;) {
      const counts = this.stats.map((s) => s.count);
      const total = counts.reduce((x, y) => x + y, 0);
      const now = nowMs();
      counts.forEach((c, w) => { if (c && !cpu0.has(w)) cpu0.set(w, [procCpu(this.procs[w].pid), c]); });
      if (total && redis0 === null) {
        redis0 = [redis ? await redisCpu(redis) : 0, total];
        tFirst = now;
      }
      if (total >= target) break;
      if (total !== lastTotal) { lastTotal = total; lastChange = now; }
      if (total === 0 && now - this.tLaunch > startupMs) { status = `no job completed within ${startupMs / 1000}s`; break; }
      if (total && now - lastChange > stallMs) { status = `stalled at ${total} of ${target}`; break; }
      if (tFirst !== null && now - tFirst > maxSeconds * 1000) { status = 'capped'; break; }
      const err = this.dead();
      if (err) { status = err; break; }
      await sleep(POLL_MS);
    }
    // final, exact state from every worker
    const dumps = await this.dump();
    const cpu1 = this.procs.map((p) => procCpu(p.pid));
    const rss = this.procs.reduce((s, p) => s + procRss(p.pid), 0);
    const total = dumps.reduce((s, d) => s + d.count, 0);
    const out = { completed: total, status };
    if (total >= 2) {
      const active = dumps.filter((d) => d.count);
      const first = Math.min(...active.map((d) => d.first));
      const last = Math.max(...active.map((d) => d.last));
      out.elapsed_s = rnd((last - first) / 1000, 4);
      out.jobs_per_s = last > first ? rnd(((total - 1) * 1000) / (last - first), 1) : null;
      out.startup_s = rnd((first - this.tLaunch) / 1000, 3);
      let wjobs = 0;
      let wcpu = 0;
      for (const [w, [c0, n0]] of cpu0) { wjobs += dumps[w].count - n0; wcpu += cpu1[w] - c0; }
      out.worker_cpu_s = rnd(wcpu, 3);
      if (wjobs > 0 && wcpu >= 0.05) out.worker_cpu_s_per_1k = rnd((wcpu / wjobs) * 1000, 4); // 10 ms ticks
      if (redis && redis0 && total > redis0[1]) {
        out.redis_cpu_s_per_1k = rnd((((await redisCpu(redis)) - redis0[0]) / (total - redis0[1])) * 1000, 4);
      }
    }
    out.worker_rss_mb = rnd(rss / 2 ** 20, 1);
    this.final = dumps;
    return out;
  }

  async dump() {
    const live = this.procs.map((p) => p.connected);
    const got = this.procs.map((p, w) => (live[w]
      ? new Promise((resolve) => { this.dumps[w] = resolve; p.send('dump'); })
      : Promise.resolve({ ...this.stats[w], runs: '', attempts: '', lat: '' })));
    const ds = await Promise.race([Promise.all(got), sleep(5000).then(() => null)]);
    if (!ds) throw new Error('workers did not report their counts');
    return ds.map((d) => ({ ...d, runs: Buffer.from(d.runs, 'base64'), attempts: Buffer.from(d.attempts, 'base64'),
      lat: new Float64Array(new Uint8Array(Buffer.from(d.lat, 'base64')).buffer) }));
  }

  runCounts(ids) {
    return ids.map((i) => this.final.reduce((s, d) => s + (d.runs[i] || 0), 0));
  }

  stop() {
    for (const p of this.procs) { try { p.kill('SIGKILL'); } catch {} }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

const range = (a, b) => Array.from({ length: b - a }, (_, k) => a + k);
const jobOpts = (kind) => (kind === 'flaky' ? { attempts: 2 } : {}); // no backoff: retried at once

async function bulk(q, kind, ids) {
  for (let k = 0; k < ids.length; k += BULK_CHUNK) {
    await q.addBulk(ids.slice(k, k + BULK_CHUNK).map((i) => ({ name: kind, data: { i }, opts: jobOpts(kind) })));
  }
}

async function inflight(q, kind, ids, lanes) {
  let next = 0;
  const lane = async () => { while (next < ids.length) { const i = ids[next++]; await q.add(kind, { i }, jobOpts(kind)); } };
  await Promise.all(range(0, lanes).map(lane));
}

function exactlyOnce(w, ids) {
  const runs = w.runCounts(ids);
  return { lost: runs.filter((r) => r === 0).length, duplicated: runs.filter((r) => r > 1).length };
}

async function run(a, res, redis) {
  const { scenario: sc, n } = a;
  const ids = range(0, n);
  const q = new Queue(a.queue, { connection: a.connection });
  try {
    if (sc === 'enqueue-sync') return { skipped: 'no sync enqueue API (Node.js)' };
    if (sc === 'enqueue-async') {
      const t = nowMs();
      await inflight(q, 'noop', ids, INFLIGHT);
      const dt = (nowMs() - t) / 1000;
      return { jobs_per_s: rnd(n / dt, 1), elapsed_s: rnd(dt, 4), inflight: INFLIGHT };
    }
    if (sc === 'enqueue-bulk') {
      const t = nowMs();
      await bulk(q, 'noop', ids);
      const dt = (nowMs() - t) / 1000;
      return { jobs_per_s: rnd(n / dt, 1), elapsed_s: rnd(dt, 4), chunk: BULK_CHUNK };
    }
    if (sc === 'memory') {
      const warm = Math.max(100, Math.floor(n / 10));
      const mem = async () => Number((await redisInfo(redis, 'memory')).used_memory);
      const m0 = await mem();
      await bulk(q, 'noop', range(0, warm));
      const m1 = await mem();
      await bulk(q, 'noop', range(warm, warm + n));
      const m2 = await mem();
      return { bytes_per_job: rnd((m2 - m1) / n, 1), first_jobs_bytes: m1 - m0, enqueued_with: 'bulk' };
    }
    const kind = { io: 'sleep', failure: 'flaky' }[sc] || 'noop';
    const procs = sc === 'drain' || sc === 'correctness' ? a.processes : 1;
    const conc = a.concurrency || (sc === 'io' ? 200 : 100);
    const out = { processes: procs, concurrency: conc };
    if (sc === 'latency') {
      const w = new Workers(a, 'noop', n + 1, procs, conc);
      try {
        await q.add('noop', { i: 0 });
        await q.waitUntilReady();
        const first = await w.wait(1, null, a.maxSeconds);
        if (first.completed < 1) return { ...out, error: first.status };
        await sleep(1000);
        const t0 = nowMs();
        for (let k = 0; k < n; k++) {
          const delay = t0 + (k * 1000) / LATENCY_RATE - nowMs();
          if (delay > 0) await sleep(delay);
          await q.add('noop', { i: k + 1, sent: nowMs() });
        }
        const r = await w.wait(n + 1, null, a.maxSeconds);
        const idsL = range(1, n + 1);
        const runs = w.runCounts(idsL);
        const lat = idsL.filter((_, k) => runs[k] > 0).map((i) => w.final.reduce((m, d) => Math.max(m, d.lat[i] || 0), 0));
        Object.assign(out, { status: r.status, completed: r.completed - 1, ...exactlyOnce(w, idsL), rate_per_s: LATENCY_RATE });
        for (const p of [50, 95, 99]) out[`p${p}_ms`] = rnd(percentile(lat, p), 2);
        out.max_ms = lat.length ? rnd(Math.max(...lat), 2) : null;
        return out;
      } finally {
        w.stop();
      }
    }
    await bulk(q, kind, ids);
    const w = new Workers(a, kind, n, procs, conc);
    try {
      const r = await w.wait(n, redis, a.maxSeconds);
      if (sc === 'correctness' && r.status === 'ok') {
        await sleep(1000); // let any duplicate delivery show up
        await w.dump().then((d) => { w.final = d; });
      }
      Object.assign(out, r, { prefilled_with: 'bulk' });
      if (r.status === 'ok') Object.assign(out, exactlyOnce(w, ids));
      if (sc === 'failure') {
        out.retried = ids.filter((i) => w.final.reduce((s, d) => s + (d.attempts[i] || 0), 0) >= 2).length;
        out.expected_retried = Math.ceil(n / FAIL_EVERY);
      }
      return out;
    } finally {
      w.stop();
    }
  } finally {
    await q.close();
  }
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  if (a.scenario === 'worker') return runWorker(a);
  const res = { lib: 'bullmq-node', version: `${pkg('bullmq').version} (ioredis ${pkg('ioredis').version}, node ${process.versions.node})`,
    variant: a.variant, settings: SETTINGS, scenario: a.scenario, n: a.n };
  if (a.scenario !== 'info') {
    const redis = new IORedis(a.redisUrl, { lazyConnect: false, maxRetriesPerRequest: 1 });
    try {
      Object.assign(res, await run(a, res, redis));
    } catch (e) {
      res.error = String(e && e.stack ? e.stack : e).slice(0, 2000);
    } finally {
      redis.disconnect();
    }
  }
  emit(res);
  process.exit(0);
}

main();

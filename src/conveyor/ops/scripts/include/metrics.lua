-- The queue's figures over time (issue 16): what the whole fleet did, kept in Redis by the
-- scripts that do it, so that the API, the CLI, the dashboard and an autoscaler read one
-- truth without Prometheus. Needs include common first.
--
-- STRINGs under the queue's metrics prefix, each an array of 64-bit counters (BITFIELD i64):
--   metrics:all             totals since the queue began (Prometheus counters and histograms)
--   metrics:<minute>        one minute's figures (minute = floor(ms / 60000)), expiring after
--                           the settings field metrics_keep_ms (default 24 h)
-- Counters (slot: meaning): 0 completed, 1 failed (dead-lettered), 2 retried, 3 cancelled;
--   4 waits counted, 5 their sum (ms), 6 runs counted, 7 their sum (ms);
--   8 + i: waits in bucket i; 8 + METRIC_BUCKETS + i: runs in bucket i (enqueued or due ->
--   started; started -> outcome recorded). Bucket i holds durations at or below
--   METRIC_BOUNDS_MS[i + 1] and above the bound before; the last one what is longer. The
--   bounds are conveyor.metrics.buckets'; conveyor.ops.metrics reads the slots.
--
-- A script counts into a table as it goes and writes once at its end: one BITFIELD per key
-- with an INCRBY for each counter touched, so a batch of 100 acknowledgements costs about
-- what one does, and a write is two commands whatever it counted.

local METRIC_BOUNDS_MS = {1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 60000, 120000, 300000, 600000, 1800000, 3600000}
local METRIC_BUCKETS = 21
local METRIC_SLOT = {completed = 0, failed = 1, retried = 2, cancelled = 3}
local METRICS_KEEP_MS = 86400000

local function metrics_new(metrics_prefix, settings_key)
  return {prefix = metrics_prefix, settings = settings_key, add = {}, any = false}
end

-- Count n jobs with `outcome` (completed, failed, retried, cancelled).
local function metrics_count(m, outcome, n)
  if n == 0 then return end
  local slot = METRIC_SLOT[outcome]
  m.add[slot] = (m.add[slot] or 0) + n
  m.any = true
end

-- Note one duration (ms) in histogram `kind` (0 wait, 1 run).
local function metrics_observe(m, kind, ms)
  if ms < 0 then ms = 0 end
  local low, high = 1, METRIC_BUCKETS  -- the first bound >= ms, by halving
  while low < high do
    local mid = math.floor((low + high) / 2)
    if METRIC_BOUNDS_MS[mid] >= ms then high = mid else low = mid + 1 end
  end
  local add = m.add
  local slot = 8 + kind * METRIC_BUCKETS + low - 1
  add[slot] = (add[slot] or 0) + 1
  slot = 4 + kind * 2
  add[slot] = (add[slot] or 0) + 1
  add[slot + 1] = (add[slot + 1] or 0) + ms
  m.any = true
end

local function metrics_flush(m, now)
  if not m.any then return end
  local ops = {}
  for slot, n in pairs(m.add) do
    ops[#ops + 1] = 'INCRBY'; ops[#ops + 1] = 'i64'; ops[#ops + 1] = '#' .. slot; ops[#ops + 1] = n
  end
  m.add = {}
  m.any = false
  local minute_key = m.prefix .. math.floor(now / 60000)
  redis.call('BITFIELD', m.prefix .. 'all', unpack(ops))
  redis.call('BITFIELD', minute_key, unpack(ops))
  if redis.call('PTTL', minute_key) < 0 then
    local keep = tonumber(redis.call('HGET', m.settings, 'metrics_keep_ms') or METRICS_KEEP_MS)
    redis.call('PEXPIRE', minute_key, keep)
  end
end

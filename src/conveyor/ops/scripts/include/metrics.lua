-- The queue's figures over time (issue 16): what the whole fleet did, kept in Redis by the
-- scripts that do it, so that the API, the CLI, the dashboard and an autoscaler read one
-- truth without Prometheus. Needs include common first.
--
-- HASHes under the queue's metrics prefix, all with the same fields:
--   metrics:all             totals since the queue began (Prometheus counters and histograms)
--   metrics:<minute>        one minute's figures (minute = floor(ms / 60000)), expiring after
--                           the settings field metrics_keep_ms (default 24 h)
-- Fields: completed, failed (dead-lettered), retried, cancelled (counts of jobs);
--   w<i>, ws, wn: wait histogram (enqueued or due -> started): count in bucket i, sum ms, count
--   r<i>, rs, rn: run histogram (started -> outcome recorded): the same
-- Bucket i holds durations at or below METRIC_BOUNDS_MS[i + 1] and above the bound before;
-- bucket #METRIC_BOUNDS_MS what is longer. The bounds are conveyor.metrics.buckets'.
--
-- A script counts into a table as it goes and writes once at its end: HINCRBY per field
-- touched, not per job, so a batch of 100 acknowledgements costs about as much as one.

local METRIC_BOUNDS_MS = {1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 60000, 120000, 300000, 600000, 1800000, 3600000}
local METRICS_KEEP_MS = 86400000

local function metrics_new(metrics_prefix, settings_key)
  return {prefix = metrics_prefix, settings = settings_key, add = {}, any = false}
end

local function metrics_count(m, field, n)
  if n == 0 then return end
  m.add[field] = (m.add[field] or 0) + n
  m.any = true
end

-- Note one duration (ms) in histogram `kind` ('w' wait, 'r' run).
local function metrics_observe(m, kind, ms)
  if ms < 0 then ms = 0 end
  local low, high = 1, #METRIC_BOUNDS_MS + 1  -- the first bound >= ms, by halving
  while low < high do
    local mid = math.floor((low + high) / 2)
    if METRIC_BOUNDS_MS[mid] >= ms then high = mid else low = mid + 1 end
  end
  local add = m.add
  local bucket = kind .. (low - 1)
  add[bucket] = (add[bucket] or 0) + 1
  add[kind .. 's'] = (add[kind .. 's'] or 0) + ms
  add[kind .. 'n'] = (add[kind .. 'n'] or 0) + 1
  m.any = true
end

local function metrics_flush(m, now)
  if not m.any then return end
  local totals_key = m.prefix .. 'all'
  local minute_key = m.prefix .. math.floor(now / 60000)
  for field, n in pairs(m.add) do
    redis.call('HINCRBY', totals_key, field, n)
    redis.call('HINCRBY', minute_key, field, n)
  end
  m.add = {}
  m.any = false
  if redis.call('PTTL', minute_key) < 0 then
    local keep = tonumber(redis.call('HGET', m.settings, 'metrics_keep_ms') or METRICS_KEEP_MS)
    redis.call('PEXPIRE', minute_key, keep)
  end
end

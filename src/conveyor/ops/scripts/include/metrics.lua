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
--   8 + i: waits in bucket i; 8 + METRIC_BUCKETS + i: runs in bucket i. Bucket i holds
--   durations at or below the (i + 1)th bound of conveyor.metrics.buckets and above the one
--   before; the last bucket what is longer. conveyor.ops.metrics reads and writes the slots.
--
-- The scripts count outcomes themselves (a few additions per call, not per job). Wait and
-- run times are measured by the workers (a wait from the claim's clock and the ready time
-- it hands over, a run around the job), added up per batch (conveyor.ops.metrics.Tally) and
-- handed to the next acknowledgement of the queue, which adds them in the same step: done
-- in Lua, per job, they cost the drain about a tenth of its Redis time. A script writes once,
-- at its end: one BITFIELD per key with an INCRBY for each counter touched.

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

-- Add the counts a worker hands over: `given` is "slot increment slot increment ..." (the
-- wait and run times it measured, see conveyor.ops.metrics.Tally), or empty.
local function metrics_given(m, given)
  local add = m.add
  for slot, n in string.gmatch(given, '(%d+) (%d+)') do
    slot = tonumber(slot)
    if slot < 8 + 2 * METRIC_BUCKETS then  -- what no counter holds is left out, not an error
      add[slot] = (add[slot] or 0) + tonumber(n)
      m.any = true
    end
  end
end

-- Write what was counted. pcall: a figure must never fail the transition it counts (a
-- metrics_keep_ms set by hand to something that is no number of ms, say), and Redis keeps
-- the writes a failing script made before it failed.
local function metrics_flush(m, now)
  if not m.any then return end
  local ops = {}
  for slot, n in pairs(m.add) do
    ops[#ops + 1] = 'INCRBY'; ops[#ops + 1] = 'i64'; ops[#ops + 1] = '#' .. slot; ops[#ops + 1] = n
  end
  m.add = {}
  m.any = false
  local minute_key = m.prefix .. math.floor(now / 60000)
  redis.pcall('BITFIELD', m.prefix .. 'all', unpack(ops))
  redis.pcall('BITFIELD', minute_key, unpack(ops))
  if redis.call('PTTL', minute_key) < 0 then
    local keep = math.floor(tonumber(redis.call('HGET', m.settings, 'metrics_keep_ms')) or METRICS_KEEP_MS)
    if keep <= 0 then keep = METRICS_KEEP_MS end
    redis.pcall('PEXPIRE', minute_key, keep)
  end
end

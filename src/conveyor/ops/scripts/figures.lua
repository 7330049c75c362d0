-- figures: a queue's state and figures for monitoring (issue 16), in one consistent read:
-- job counts, how long the oldest waiting job has waited, delayed jobs already due, limits,
-- and the figures the scripts keep (see include/metrics.lua): totals and the last minutes.
--
-- KEYS[1] waiting_key LIST   KEYS[2] prioritized_key ZSET   KEYS[3] delayed_key ZSET
-- KEYS[4] active_key ZSET   KEYS[5] completed_key ZSET   KEYS[6] failed_key ZSET
-- KEYS[7] cancelled_key ZSET   KEYS[8] group_prefix   KEYS[9] parents_key ZSET
-- KEYS[10] suspects_key ZSET   KEYS[11] settings_key HASH   KEYS[12] metrics_prefix of the queue's figures
-- KEYS[13] job_prefix of job hashes
-- ARGV[1] minutes: how many whole minutes before the current one to return (0: none)
-- Returns: {now_ms, waiting, delayed, active, completed, failed, cancelled, waiting_children,
--   suspects, delayed_due, oldest_ready_ms (-1: nothing waits), paused (0/1),
--   concurrency (-1: none), rate_max (-1: none), rate_ms, totals, first_minute, minute_1, ...,
--   minute_n}: totals and each minute as their counters (see include/metrics.lua), or an
--   empty array where nothing was counted
--   The minutes run from first_minute (oldest) to the current one, which is still filling.
-- Errors: none.
-- @include common
-- @include metrics

local waiting_key = KEYS[1]
local prioritized_key = KEYS[2]
local delayed_key = KEYS[3]
local active_key = KEYS[4]
local completed_key = KEYS[5]
local failed_key = KEYS[6]
local cancelled_key = KEYS[7]
local group_prefix = KEYS[8]
local parents_key = KEYS[9]
local suspects_key = KEYS[10]
local settings_key = KEYS[11]
local metrics_prefix = KEYS[12]
local job_prefix = KEYS[13]
local minutes = tonumber(ARGV[1])

-- How many groups' lines are looked at for the oldest waiting job: a queue with thousands
-- of groups gives an estimate from some of them, not a scan.
local GROUPS_LOOKED_AT = 20
-- How many jobs at the out end of the plain waiting list are looked at.
local TAIL_LOOKED_AT = 20

local now = now_ms()
local oldest = -1

local read_counters = {}
for slot = 0, 8 + 2 * METRIC_BUCKETS - 1 do
  read_counters[#read_counters + 1] = 'GET'; read_counters[#read_counters + 1] = 'i64'
  read_counters[#read_counters + 1] = '#' .. slot
end

local function counters(key)
  if redis.call('EXISTS', key) == 0 then return {} end
  return redis.call('BITFIELD_RO', key, unpack(read_counters))
end

-- When a waiting job last became ready: enqueued (ct), or ready again (rd: due after a
-- delay, handed back, retried).
local function consider(id)
  if not id then return end
  local f = redis.call('HMGET', job_prefix .. id, 'ct', 'rd')
  if not f[1] then return end
  local ready = tonumber(f[2] or f[1])
  if oldest < 0 or ready < oldest then oldest = ready end
end

-- Plain jobs leave the waiting list from its right end: the oldest is there. In the
-- prioritized line the first is the next out and the last the one waiting behind all
-- others; a grouped line likewise; suspects by when they were handed back.
-- Jobs handed back (requeued, swept) go to that end too, ready again since then: look at
-- the last few.
local tail = redis.call('LRANGE', waiting_key, -TAIL_LOOKED_AT, -1)
for i = 1, #tail do consider(tail[i]) end
for _, range in ipairs({{0, 0}, {-1, -1}}) do
  local ids = redis.call('ZRANGE', prioritized_key, range[1], range[2])
  consider(ids[1])
end
local first_suspect = redis.call('ZRANGE', suspects_key, 0, 0)
consider(first_suspect[1])
-- Every group with waiting jobs is known (a group at its limit is out of the ring for now).
local groups = redis.call('SMEMBERS', group_prefix .. 'known')
for i = 1, math.min(#groups, GROUPS_LOOKED_AT) do
  local line = group_prefix .. 'q:' .. groups[i]
  consider(redis.call('ZRANGE', line, 0, 0)[1])
  consider(redis.call('ZRANGE', line, -1, -1)[1])
end
-- A delayed job that is due waits too, until a claim promotes it.
local due = redis.call('ZRANGEBYSCORE', delayed_key, '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1)
if due[2] and (oldest < 0 or tonumber(due[2]) < oldest) then oldest = tonumber(due[2]) end

local settings = redis.call('HMGET', settings_key, 'paused', 'concurrency', 'rate_max', 'rate_ms')
local reply = {now}
local counts = state_counts(waiting_key, prioritized_key, delayed_key, active_key, completed_key, failed_key,
                            cancelled_key, group_prefix, parents_key, suspects_key)
for i = 1, #counts do reply[#reply + 1] = counts[i] end
local rest = {
  redis.call('ZCARD', suspects_key),
  redis.call('ZCOUNT', delayed_key, '-inf', now),
  oldest,
  settings[1] and 1 or 0,
  tonumber(settings[2] or -1),
  tonumber(settings[3] or -1),
  tonumber(settings[4] or 0),
  counters(metrics_prefix .. 'all'),
}
for i = 1, #rest do reply[#reply + 1] = rest[i] end
local current = math.floor(now / 60000)
reply[#reply + 1] = current - minutes
for minute = current - minutes, current do
  reply[#reply + 1] = counters(metrics_prefix .. minute)
end
return reply

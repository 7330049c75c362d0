-- sweep: re-deliver jobs whose lease expired because their worker died or froze.
--
-- A job whose worker was lost `alone_after` times becomes a suspect: it may be what kills
-- its workers, and every job running beside it dies with it and has its crash counted too.
-- It waits in the suspects line, which claim.lua serves only to a worker that holds nothing,
-- and alone, until the job completes, fails for good or is retried by hand (retry.lua). So a
-- job one crash away from being dead-lettered is never in the same worker as another job:
-- it is dead-lettered for its own crashes only, and cannot take other jobs down with it.
-- Jobs lost fewer times go back to the front of their line, as before: most lost workers
-- were killed from outside (a deploy, a machine), and their jobs should not wait.
--
-- A lease that ran out while no worker could reach Redis (it was down, or cut off from
-- every worker) is not taken for a lost worker: for a lease's time after such a silence,
-- leases that ran out in it are left to their workers' heartbeats to renew (see
-- lease_contact in common.lua). Re-delivering them at once -- when the sweep reached the
-- restarted Redis before the heartbeat did -- counted a crash for a job its live worker
-- still ran, and ran it twice.
--
-- KEYS[1] active_key ZSET   KEYS[2] waiting_key LIST   KEYS[3] prioritized_key ZSET
-- KEYS[4] failed_key ZSET   KEYS[5] marker_key ZSET   KEYS[6] sequence_key counter
-- KEYS[7] job_prefix of job hashes   KEYS[8] done_prefix of done lists   KEYS[9] events_key STREAM
-- KEYS[10] group_prefix   KEYS[11] outbox_key LIST (notes for parents in flows)
-- KEYS[12] suspects_key ZSET   KEYS[13] lease_clock_key HASH   KEYS[14] history_key STREAM
-- KEYS[15] history_feed_key HASH (the history hand-off, see include/history.lua)
-- KEYS[16] metrics_prefix of the queue's figures (see include/metrics.lua)   KEYS[17] settings_key HASH
-- ARGV[1] max_crashes: a job whose worker was lost this many times is dead-lettered
-- ARGV[2] limit: max jobs to look at   ARGV[3] failed_keep_count, ARGV[4] failed_keep_ms:
--   retention of failed jobs
-- ARGV[5] alone_after: from this many crashes on, a recovered job is a suspect (runs alone)
-- ARGV[6] lease_ms: the sweeping worker's lease (a silence is longer than half of it; leases
--   that ran out in one wait this long after it)
-- Returns: {recovered ids..., '|', dead-lettered ids..., '|', silence_ms, held_back}:
--   silence_ms > 0 when this call found that no worker had reached the queue for that long;
--   held_back: leases that ran out in the last silence, left to their workers for now.
-- Errors: none.
-- @include common
-- @include history
-- @include metrics

local active_key = KEYS[1]
local waiting_key = KEYS[2]
local prioritized_key = KEYS[3]
local failed_key = KEYS[4]
local marker_key = KEYS[5]
local sequence_key = KEYS[6]
local job_prefix = KEYS[7]
local done_prefix = KEYS[8]
local events_key = KEYS[9]
local group_prefix = KEYS[10]
local outbox_key = KEYS[11]
local suspects_key = KEYS[12]
local lease_clock_key = KEYS[13]
local history_key = KEYS[14]
local history_feed_key = KEYS[15]
local metrics_prefix = KEYS[16]
local settings_key = KEYS[17]
local max_crashes = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local failed_keep_count = tonumber(ARGV[3])
local failed_keep_ms = tonumber(ARGV[4])
local alone_after = tonumber(ARGV[5])
local lease_ms = tonumber(ARGV[6])

local now = now_ms()
local silence_from, silence_to, just_ended = lease_contact(lease_clock_key, now, lease_ms / 2)
local upto, held_back = now, 0
if silence_from and now < silence_to + lease_ms then
  upto = '(' .. silence_from
  held_back = redis.call('ZCOUNT', active_key, silence_from, now)
end
local expired = redis.call('ZRANGEBYSCORE', active_key, '-inf', upto, 'LIMIT', 0, limit)
local recovered, dead = {}, {}
local feed = nil
if #expired > 0 then feed = history_feed(history_key, history_feed_key) end

for i = 1, #expired do
  local id = expired[i]
  local key = job_prefix .. id
  redis.call('ZREM', active_key, id)
  if redis.call('EXISTS', key) == 1 then
    local crashes = redis.call('HINCRBY', key, 'cr', 1)
    local group = redis.call('HGET', key, 'g')
    if group then leave_group(group_prefix, group) end
    if crashes >= max_crashes then
      local err = cjson.encode({
        type = 'WorkerLost',
        message = 'worker lost ' .. crashes .. ' times while running this job',
        reason = 'worker_lost',
      })
      local f = redis.call('HMGET', key, 'wt', 'pa')
      notify_waiters(done_prefix, id, f[1], 'f' .. err)
      if f[2] then tell_parent(outbox_key, f[2], id, 'f', err, now) end
      if feed then hand_off(feed, key, id, 'failed', now, err) end
      redis.call('HSET', key, 's', 'failed', 'ft', now, 'e', err)
      keep_finished(failed_key, key, id, failed_keep_count, failed_keep_ms, now)
      emit(events_key, 'failed', 'id', id, 'reason', 'worker_lost')
      dead[#dead + 1] = id
    else
      if feed then log_attempt(key, 'lost', now, nil) end
      if crashes >= alone_after or redis.call('HEXISTS', key, 'su') == 1 then
        redis.call('HSET', key, 's', 'waiting', 'su', 1, 'rd', now)
        redis.call('ZADD', suspects_key, now, id)
        emit(events_key, 'stalled', 'id', id, 'crashes', crashes, 'alone', 1)
      else
        local priority = tonumber(redis.call('HGET', key, 'p') or 0)
        redis.call('HSET', key, 's', 'waiting', 'rd', now)
        push_ready(waiting_key, prioritized_key, sequence_key, id, priority, true, group, group_prefix)
        emit(events_key, 'stalled', 'id', id, 'crashes', crashes)
      end
      recovered[#recovered + 1] = id
    end
  end
end

if feed then close_hand_off(feed) end
if #expired > 0 then
  -- A lost attempt is retried (it runs again) unless it was the last one allowed.
  local figures = metrics_new(metrics_prefix, settings_key)
  metrics_count(figures, 'retried', #recovered)
  metrics_count(figures, 'failed', #dead)
  metrics_flush(figures, now)
end
if #recovered > 0 then
  wake(marker_key)
end
local reply = recovered
reply[#reply + 1] = '|'
for i = 1, #dead do reply[#reply + 1] = dead[i] end
reply[#reply + 1] = '|'
reply[#reply + 1] = just_ended and (silence_to - silence_from) or 0
reply[#reply + 1] = held_back
return reply

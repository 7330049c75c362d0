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
-- KEYS[1] active ZSET    KEYS[2] waiting LIST   KEYS[3] prioritized ZSET   KEYS[4] failed ZSET
-- KEYS[5] marker ZSET    KEYS[6] sequence counter   KEYS[7] job hash prefix   KEYS[8] done-list prefix
-- KEYS[9] events STREAM   KEYS[10] group prefix   KEYS[11] outbox LIST (notes for parents in flows)
-- KEYS[12] suspects ZSET
-- ARGV[1] max crashes: a job whose worker was lost this many times is dead-lettered
-- ARGV[2] max jobs to look at   ARGV[3] keep count for failed   ARGV[4] keep ms for failed
-- ARGV[5] alone_after: from this many crashes on, a recovered job is a suspect (runs alone)
-- Returns: {recovered ids..., '|', dead-lettered ids...}
-- Errors: none.
-- @include common

local max_crashes = tonumber(ARGV[1])
local alone_after = tonumber(ARGV[5])
local now = now_ms()
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local recovered, dead = {}, {}

for i = 1, #expired do
  local id = expired[i]
  local key = KEYS[7] .. id
  redis.call('ZREM', KEYS[1], id)
  if redis.call('EXISTS', key) == 1 then
    local crashes = redis.call('HINCRBY', key, 'cr', 1)
    local group = redis.call('HGET', key, 'g')
    if group then leave_group(KEYS[10], group) end
    if crashes >= max_crashes then
      local err = cjson.encode({
        type = 'WorkerLost',
        message = 'worker lost ' .. crashes .. ' times while running this job',
        reason = 'worker_lost',
      })
      local f = redis.call('HMGET', key, 'wt', 'pa')
      notify_waiters(KEYS[8], id, f[1], 'f' .. err)
      if f[2] then tell_parent(KEYS[11], f[2], id, 'f', err, now) end
      redis.call('HSET', key, 's', 'failed', 'ft', now, 'e', err)
      keep_finished(KEYS[4], key, id, tonumber(ARGV[3]), tonumber(ARGV[4]), now)
      emit(KEYS[9], 'failed', 'id', id, 'reason', 'worker_lost')
      dead[#dead + 1] = id
    elseif crashes >= alone_after or redis.call('HEXISTS', key, 'su') == 1 then
      redis.call('HSET', key, 's', 'waiting', 'su', 1)
      redis.call('ZADD', KEYS[12], now, id)
      emit(KEYS[9], 'stalled', 'id', id, 'crashes', crashes, 'alone', 1)
      recovered[#recovered + 1] = id
    else
      local priority = tonumber(redis.call('HGET', key, 'p') or 0)
      redis.call('HSET', key, 's', 'waiting')
      push_ready(KEYS[2], KEYS[3], KEYS[6], id, priority, true, group, KEYS[10])
      emit(KEYS[9], 'stalled', 'id', id, 'crashes', crashes)
      recovered[#recovered + 1] = id
    end
  end
end

if #recovered > 0 then
  wake(KEYS[5])
end
local reply = recovered
reply[#reply + 1] = '|'
for i = 1, #dead do reply[#reply + 1] = dead[i] end
return reply

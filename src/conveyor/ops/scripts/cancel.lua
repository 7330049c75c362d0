-- cancel: cancel a job that has not run yet, or ask the worker running it to abort it.
--
-- KEYS[1] waiting LIST   KEYS[2] prioritized ZSET   KEYS[3] delayed ZSET   KEYS[4] cancelled ZSET
-- KEYS[5] job hash prefix   KEYS[6] done-list prefix   KEYS[7] events STREAM   KEYS[8] group prefix
-- KEYS[9] outbox LIST (notes for parents in flows)   KEYS[10] parents ZSET   KEYS[11] suspects ZSET
-- ARGV[1] job id   ARGV[2] reason JSON ({"by": ..., "reason": ...})
-- ARGV[3] keep count for cancelled jobs   ARGV[4] keep ms for cancelled jobs
-- Returns: 'cancelled' when the job was waiting or delayed and is now cancelled;
--   'aborting' when it is running: its worker sees the request at its next heartbeat,
--   stops the job and records it as cancelled.
-- Errors: CONVEYOR:NOT_FOUND when there is no such job; CONVEYOR:INVALID_STATE when it
--   already finished.
-- @include common

local id = ARGV[1]
local key = KEYS[5] .. id
local f = redis.call('HMGET', key, 's', 'wt', 'g', 'pa')
local state = f[1]
if not state then
  return redis.error_reply('CONVEYOR:NOT_FOUND no job ' .. id)
end
if state == 'active' then
  redis.call('HSET', key, 'ab', ARGV[2])
  emit(KEYS[7], 'aborting', 'id', id)
  return 'aborting'
end
if state == 'waiting' then
  unlist_waiting(KEYS[1], KEYS[2], KEYS[11], KEYS[8], f[3], id)
elseif state == 'delayed' then
  redis.call('ZREM', KEYS[3], id)
elseif state == 'waiting_children' then
  redis.call('ZREM', KEYS[10], id)
else
  return redis.error_reply('CONVEYOR:INVALID_STATE job ' .. id .. ' already ' .. state)
end
local now = now_ms()
notify_waiters(KEYS[6], id, f[2], 'x' .. ARGV[2])
redis.call('HSET', key, 's', 'cancelled', 'ft', now, 'e', ARGV[2])
keep_finished(KEYS[4], key, id, tonumber(ARGV[3]), tonumber(ARGV[4]), now)
trim_finished(KEYS[4], KEYS[5], tonumber(ARGV[3]), tonumber(ARGV[4]), now)
emit(KEYS[7], 'cancelled', 'id', id)
if f[4] then tell_parent(KEYS[9], f[4], id, 'x', ARGV[2], now) end
return 'cancelled'

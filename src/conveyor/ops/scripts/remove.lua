-- remove: delete one job that is not running.
--
-- KEYS[1] waiting LIST   KEYS[2] prioritized ZSET   KEYS[3] delayed ZSET   KEYS[4] completed ZSET
-- KEYS[5] failed ZSET    KEYS[6] job hash prefix   KEYS[7] cancelled ZSET   KEYS[8] group prefix
-- KEYS[9] parents ZSET   KEYS[10] outbox LIST (notes for parents in flows)   KEYS[11] suspects ZSET
-- ARGV[1] job id
-- Returns: the state the job was in.
-- Errors: CONVEYOR:NOT_FOUND when there is no such job; CONVEYOR:INVALID_STATE when it is
--   active (a worker is running it; abort it instead).
-- @include common

local id = ARGV[1]
local key = KEYS[6] .. id
local f = redis.call('HMGET', key, 's', 'g', 'pa')
local state = f[1]
if not state then
  return redis.error_reply('CONVEYOR:NOT_FOUND no job ' .. id)
end
if state == 'active' then
  return redis.error_reply('CONVEYOR:INVALID_STATE job ' .. id .. ' is running; it cannot be removed now')
end
if state == 'waiting' then
  unlist_waiting(KEYS[1], KEYS[2], KEYS[11], KEYS[8], f[2], id)
elseif state == 'delayed' then
  redis.call('ZREM', KEYS[3], id)
elseif state == 'waiting_children' then
  redis.call('ZREM', KEYS[9], id)
elseif state == 'completed' then
  redis.call('ZREM', KEYS[4], id)
elseif state == 'failed' then
  redis.call('ZREM', KEYS[5], id)
elseif state == 'cancelled' then
  redis.call('ZREM', KEYS[7], id)
end
redis.call('DEL', key)
-- A child that will never run must not leave its parent waiting forever.
if f[3] and (state == 'waiting' or state == 'delayed' or state == 'waiting_children') then
  local err = cjson.encode({type = 'Removed', message = 'the job was removed before it ran', reason = 'removed'})
  tell_parent(KEYS[10], f[3], id, 'x', err, now_ms())
end
return state

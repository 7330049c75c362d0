-- promote: make one delayed job ready to run now (its delay or retry backoff is skipped).
--
-- KEYS[1] delayed ZSET   KEYS[2] waiting LIST   KEYS[3] prioritized ZSET   KEYS[4] marker ZSET
-- KEYS[5] sequence counter   KEYS[6] job hash prefix   KEYS[7] events STREAM
-- KEYS[8] group prefix (a grouped job goes back to its group's line)
-- KEYS[9] suspects ZSET (a suspect goes back there; see sweep.lua)
-- ARGV[1] job id
-- Returns: 'waiting'.
-- Errors: CONVEYOR:NOT_FOUND when there is no such job; CONVEYOR:INVALID_STATE when the job
--   is not delayed (it is already waiting, running or finished).
-- @include common

local id = ARGV[1]
local key = KEYS[6] .. id
local state = redis.call('HGET', key, 's')
if not state then
  return redis.error_reply('CONVEYOR:NOT_FOUND no job ' .. id)
end
if state ~= 'delayed' or redis.call('ZREM', KEYS[1], id) == 0 then
  return redis.error_reply('CONVEYOR:INVALID_STATE job ' .. id .. ' is ' .. state .. ', not delayed')
end
redis.call('HSET', key, 's', 'waiting', 'due', now_ms())
local f = redis.call('HMGET', key, 'p', 'g', 'su')
if f[3] then
  redis.call('ZADD', KEYS[9], now_ms(), id)
else
  push_ready(KEYS[2], KEYS[3], KEYS[5], id, tonumber(f[1] or 0), false, f[2], KEYS[8])
end
wake(KEYS[4])
emit(KEYS[7], 'promoted', 'id', id)
return 'waiting'

-- promote: make one delayed job ready to run now (its delay or retry backoff is skipped).
--
-- KEYS[1] delayed_key ZSET   KEYS[2] waiting_key LIST   KEYS[3] prioritized_key ZSET
-- KEYS[4] marker_key ZSET   KEYS[5] sequence_key counter   KEYS[6] job_prefix of job hashes
-- KEYS[7] events_key STREAM   KEYS[8] group_prefix (a grouped job goes back to its group's line)
-- KEYS[9] suspects_key ZSET (a suspect goes back there; see sweep.lua)
-- ARGV[1] id of the job
-- Returns: 'waiting'.
-- Errors: CONVEYOR:NOT_FOUND when there is no such job; CONVEYOR:INVALID_STATE when the job
--   is not delayed (it is already waiting, running or finished).
-- @include common

local delayed_key = KEYS[1]
local waiting_key = KEYS[2]
local prioritized_key = KEYS[3]
local marker_key = KEYS[4]
local sequence_key = KEYS[5]
local job_prefix = KEYS[6]
local events_key = KEYS[7]
local group_prefix = KEYS[8]
local suspects_key = KEYS[9]
local id = ARGV[1]

local key = job_prefix .. id
local state = redis.call('HGET', key, 's')
if not state then
  return redis.error_reply('CONVEYOR:NOT_FOUND no job ' .. id)
end
if state ~= 'delayed' or redis.call('ZREM', delayed_key, id) == 0 then
  return redis.error_reply('CONVEYOR:INVALID_STATE job ' .. id .. ' is ' .. state .. ', not delayed')
end
redis.call('HSET', key, 's', 'waiting', 'due', now_ms(), 'rd', now_ms())
local f = redis.call('HMGET', key, 'p', 'g', 'su')
if f[3] then
  redis.call('ZADD', suspects_key, now_ms(), id)
else
  push_ready(waiting_key, prioritized_key, sequence_key, id, tonumber(f[1] or 0), false, f[2], group_prefix)
end
wake(marker_key)
emit(events_key, 'promoted', 'id', id)
return 'waiting'

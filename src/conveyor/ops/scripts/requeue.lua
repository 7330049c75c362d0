-- requeue: a stopping worker hands jobs it will not finish back to waiting at once,
-- first in line, without counting the interrupted attempt or a crash. A suspect goes back
-- to the suspects line (see sweep.lua): being stopped proves nothing.
--
-- KEYS[1] active_key ZSET   KEYS[2] waiting_key LIST   KEYS[3] prioritized_key ZSET
-- KEYS[4] marker_key ZSET   KEYS[5] sequence_key counter   KEYS[6] job_prefix of job hashes
-- KEYS[7] group_prefix   KEYS[8] suspects_key ZSET
-- ARGV: from first_held (1) on, pairs: id, fencing token.
-- Returns: the number of jobs handed back (stale tokens are skipped).
-- Errors: none.
-- @include common

local active_key = KEYS[1]
local waiting_key = KEYS[2]
local prioritized_key = KEYS[3]
local marker_key = KEYS[4]
local sequence_key = KEYS[5]
local job_prefix = KEYS[6]
local group_prefix = KEYS[7]
local suspects_key = KEYS[8]
local first_held = 1

local count = 0
local now = now_ms()
for i = first_held, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local key = job_prefix .. id
  local f = redis.call('HMGET', key, 'tk', 's', 'p', 'at', 'g', 'su')
  if f[1] == token and f[2] == 'active' then
    redis.call('ZREM', active_key, id)
    if f[5] then leave_group(group_prefix, f[5]) end
    redis.call('HSET', key, 's', 'waiting', 'at', math.max(0, tonumber(f[4] or 1) - 1), 'rd', now)
    if f[6] then
      redis.call('ZADD', suspects_key, now, id)
    else
      push_ready(waiting_key, prioritized_key, sequence_key, id, tonumber(f[3] or 0), true, f[5], group_prefix)
    end
    count = count + 1
  end
end
if count > 0 then
  wake(marker_key)
end
return count

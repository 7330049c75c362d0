-- requeue: a stopping worker hands jobs it will not finish back to waiting at once,
-- first in line, without counting the interrupted attempt or a crash. A suspect goes back
-- to the suspects line (see sweep.lua): being stopped proves nothing.
--
-- KEYS[1] active ZSET   KEYS[2] waiting LIST   KEYS[3] prioritized ZSET   KEYS[4] marker ZSET
-- KEYS[5] sequence counter   KEYS[6] job hash prefix   KEYS[7] group prefix   KEYS[8] suspects ZSET
-- ARGV: pairs id, fencing token.
-- Returns: the number of jobs handed back (stale tokens are skipped).
-- Errors: none.
-- @include common

local count = 0
local now = now_ms()
for i = 1, #ARGV, 2 do
  local id = ARGV[i]
  local key = KEYS[6] .. id
  local f = redis.call('HMGET', key, 'tk', 's', 'p', 'at', 'g', 'su')
  if f[1] == ARGV[i + 1] and f[2] == 'active' then
    redis.call('ZREM', KEYS[1], id)
    if f[5] then leave_group(KEYS[7], f[5]) end
    redis.call('HSET', key, 's', 'waiting', 'at', math.max(0, tonumber(f[4] or 1) - 1))
    if f[6] then
      redis.call('ZADD', KEYS[8], now, id)
    else
      push_ready(KEYS[2], KEYS[3], KEYS[5], id, tonumber(f[3] or 0), true, f[5], KEYS[7])
    end
    count = count + 1
  end
end
if count > 0 then
  wake(KEYS[4])
end
return count

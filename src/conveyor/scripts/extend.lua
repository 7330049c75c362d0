-- extend: a worker's heartbeat renews the leases of all jobs it holds (one call per queue).
--
-- KEYS[1] active ZSET   KEYS[2] job hash prefix
-- ARGV[1] lease ms, then pairs: id, fencing token.
-- Returns: the ids whose lease this worker no longer holds (re-delivered or gone); the
--   worker stops caring about their outcome, since a newer attempt owns them.
-- Errors: none.
-- @include common

local deadline = now_ms() + tonumber(ARGV[1])
local lost = {}
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  local f = redis.call('HMGET', KEYS[2] .. id, 'tk', 's')
  if f[1] == ARGV[i + 1] and f[2] == 'active' then
    redis.call('ZADD', KEYS[1], 'XX', deadline, id)
  else
    lost[#lost + 1] = id
  end
end
return lost

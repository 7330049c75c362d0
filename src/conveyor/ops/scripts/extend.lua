-- extend: a worker's heartbeat renews the leases of all jobs it holds (one call per queue).
--
-- KEYS[1] active ZSET   KEYS[2] job hash prefix
-- ARGV[1] lease ms, then pairs: id, fencing token.
-- Returns: {lost ids..., '|', ids to abort...}. Lost: ids whose lease this worker no
--   longer holds (re-delivered or gone); a newer attempt owns them. To abort: jobs someone
--   cancelled while they ran (see cancel.lua); the worker stops them.
-- Errors: none.
-- @include common

local deadline = now_ms() + tonumber(ARGV[1])
local lost, abort = {}, {}
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  local f = redis.call('HMGET', KEYS[2] .. id, 'tk', 's', 'ab')
  if f[1] == ARGV[i + 1] and f[2] == 'active' then
    redis.call('ZADD', KEYS[1], 'XX', deadline, id)
    if f[3] then abort[#abort + 1] = id end
  else
    lost[#lost + 1] = id
  end
end
lost[#lost + 1] = '|'
for i = 1, #abort do lost[#lost + 1] = abort[i] end
return lost

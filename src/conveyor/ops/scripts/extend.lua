-- extend: a worker's heartbeat renews the leases of all jobs it holds (one call per queue).
--
-- KEYS[1] active_key ZSET   KEYS[2] job_prefix of job hashes   KEYS[3] lease_clock_key HASH
--   (notes that a worker reached the queue, see lease_contact in common.lua)
-- ARGV[1] lease_ms, then, from first_held (2) on, pairs: id, fencing token.
-- Returns: {lost tokens..., '|', tokens to abort...}, naming attempts, not jobs: one worker
--   may hold two attempts of a job (the sweep re-delivered a job it still ran, and it claimed
--   it again). Lost: attempts whose lease this worker no longer holds (re-delivered or gone);
--   a newer attempt owns the job. To abort: attempts someone cancelled while they ran (see
--   cancel.lua); the worker stops them.
-- Errors: none.
-- @include common

local active_key = KEYS[1]
local job_prefix = KEYS[2]
local lease_clock_key = KEYS[3]
local lease_ms = tonumber(ARGV[1])
local first_held = 2

local now = now_ms()
lease_contact(lease_clock_key, now, lease_ms / 2)
local deadline = now + lease_ms
local lost, abort = {}, {}
for i = first_held, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local f = redis.call('HMGET', job_prefix .. id, 'tk', 's', 'ab')
  if f[1] == token and f[2] == 'active' then
    redis.call('ZADD', active_key, 'XX', deadline, id)
    if f[3] then abort[#abort + 1] = token end
  else
    lost[#lost + 1] = token
  end
end
lost[#lost + 1] = '|'
for i = 1, #abort do lost[#lost + 1] = abort[i] end
return lost

-- claim: promote due delayed jobs, then hand up to N ready jobs to one worker.
--
-- KEYS[1] waiting LIST     KEYS[2] prioritized ZSET   KEYS[3] delayed ZSET
-- KEYS[4] active ZSET      KEYS[5] marker ZSET        KEYS[6] sequence counter
-- KEYS[7] job hash prefix
-- ARGV[1] max jobs N   ARGV[2] lease ms   ARGV[3] worker id   ARGV[4] max delayed jobs to promote
-- Returns: {wait_ms, id1, token1, attempts1, name1, args1, kwargs1, options1, id2, ...}
--   wait_ms: ms until the earliest delayed job is due, or -1 when none is delayed. The
--   worker blocks on the marker for at most that long, so it wakes when the job is due.
--   Each claimed job gets a lease deadline (score in active) and a fresh fencing token.
-- Errors: none.
-- @include common

local max_jobs = tonumber(ARGV[1])
local lease = tonumber(ARGV[2])
local worker = ARGV[3]
local now = now_ms()

-- 1. Promote delayed jobs that are due, oldest due first.
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
if #due > 0 then
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, #due - 1)
  for i = 1, #due do
    local key = KEYS[7] .. due[i]
    local priority = tonumber(redis.call('HGET', key, 'p') or 0)
    redis.call('HSET', key, 's', 'waiting')
    push_ready(KEYS[1], KEYS[2], KEYS[6], due[i], priority, false)
  end
end

-- 2. Take ids in dequeue order: positive priorities, then priority 0 (FIFO list), then negative.
local ids = {}
if max_jobs > 0 then
  local high = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(0', 'LIMIT', 0, max_jobs)
  if #high > 0 then
    redis.call('ZREMRANGEBYRANK', KEYS[2], 0, #high - 1)
    for i = 1, #high do ids[#ids + 1] = high[i] end
  end
  local need = max_jobs - #ids
  if need > 0 then
    local plain = redis.call('RPOP', KEYS[1], need)
    if plain then
      for i = 1, #plain do ids[#ids + 1] = plain[i] end
    end
  end
  need = max_jobs - #ids
  if need > 0 then
    local low = redis.call('ZRANGE', KEYS[2], 0, need - 1)
    if #low > 0 then
      redis.call('ZREMRANGEBYRANK', KEYS[2], 0, #low - 1)
      for i = 1, #low do ids[#ids + 1] = low[i] end
    end
  end
end

-- 3. Lease each job to this worker with a new fencing token.
local reply = {-1}
if #ids > 0 then
  local last_token = redis.call('INCRBY', KEYS[6], #ids)
  local token = last_token - #ids
  local deadline = now + lease
  for i = 1, #ids do
    local id = ids[i]
    local key = KEYS[7] .. id
    local f = redis.call('HMGET', key, 'n', 'a', 'k', 'o', 'at')
    token = token + 1
    if f[1] then
      local attempts = tonumber(f[5] or 0) + 1
      redis.call('HSET', key, 's', 'active', 'at', attempts, 'tk', token, 'st', now, 'w', worker)
      redis.call('ZADD', KEYS[4], deadline, id)
      reply[#reply + 1] = id
      reply[#reply + 1] = token
      reply[#reply + 1] = attempts
      reply[#reply + 1] = f[1]
      reply[#reply + 1] = f[2]
      reply[#reply + 1] = f[3] or ''
      reply[#reply + 1] = f[4] or ''
    end
    -- An id without a hash was removed while it waited; there is nothing to run.
  end
  -- More work remains: wake the next blocked worker, so one enqueue wakes as many
  -- workers as there is work for, one after the other.
  if #ids == max_jobs and (redis.call('LLEN', KEYS[1]) > 0 or redis.call('ZCARD', KEYS[2]) > 0) then
    wake(KEYS[5])
  end
end

local next_due = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
if next_due[2] then
  reply[1] = math.max(0, tonumber(next_due[2]) - now)
end
return reply

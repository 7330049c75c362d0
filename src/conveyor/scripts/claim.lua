-- claim: promote due delayed jobs, then hand up to N ready jobs to one worker, within the
-- queue's limits (pause, concurrency across all workers, rate per time window).
--
-- KEYS[1] waiting LIST     KEYS[2] prioritized ZSET   KEYS[3] delayed ZSET
-- KEYS[4] active ZSET      KEYS[5] marker ZSET        KEYS[6] sequence counter
-- KEYS[7] job hash prefix  KEYS[8] queue settings HASH (paused, concurrency, rate_max, rate_ms)
-- KEYS[9] rate window counter   KEYS[10] failed ZSET   KEYS[11] done-list prefix
-- KEYS[12] events STREAM
-- ARGV[1] max jobs N   ARGV[2] lease ms   ARGV[3] worker id   ARGV[4] max delayed jobs to promote
-- ARGV[5] keep count for failed jobs   ARGV[6] keep ms for failed jobs (for jobs that expired)
-- Returns: {wait_ms, id1, token1, attempts1, name1, args1, kwargs1, options1, id2, ...}
--   wait_ms: ms until something the worker waits for changes by itself (the earliest
--   delayed job is due, the rate window resets), or -1. The worker blocks on the marker
--   for at most that long. Each claimed job gets a lease deadline (its score in active)
--   and a fresh fencing token. Jobs whose time to live ran out before they started are
--   moved to failed with the reason "expired" instead of being handed out.
-- Errors: none.
-- @include common

local max_jobs = tonumber(ARGV[1])
local lease = tonumber(ARGV[2])
local worker = ARGV[3]
local now = now_ms()
local wait_ms = -1

local function wait_at_most(ms)
  if wait_ms < 0 or ms < wait_ms then wait_ms = ms end
end

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

-- 2. The queue's own limits shrink N. Without settings this costs one HMGET.
local settings = redis.call('HMGET', KEYS[8], 'paused', 'concurrency', 'rate_max', 'rate_ms')
if settings[1] then
  max_jobs = 0
end
if settings[2] and max_jobs > 0 then
  max_jobs = math.min(max_jobs, tonumber(settings[2]) - redis.call('ZCARD', KEYS[4]))
end
local rate_max = tonumber(settings[3] or 0)
if rate_max > 0 and max_jobs > 0 then
  local room = rate_max - tonumber(redis.call('GET', KEYS[9]) or 0)
  if room <= 0 then
    max_jobs = 0
    wait_at_most(math.max(1, redis.call('PTTL', KEYS[9])))
  else
    max_jobs = math.min(max_jobs, room)
  end
end

-- 3. Take ids in dequeue order: positive priorities, then priority 0 (FIFO list), then negative.
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

-- 4. Lease each job to this worker with a new fencing token.
local reply = {-1}
local started = 0
if #ids > 0 then
  local last_token = redis.call('INCRBY', KEYS[6], #ids)
  local token = last_token - #ids
  local deadline = now + lease
  local leases = {}  -- score, member pairs for one ZADD
  for i = 1, #ids do
    local id = ids[i]
    local key = KEYS[7] .. id
    local f = redis.call('HMGET', key, 'n', 'a', 'k', 'o', 'at', 'x', 'wt')
    token = token + 1
    if f[1] and f[6] and tonumber(f[6]) <= now then
      local err = cjson.encode({type = 'Expired', message = 'the job was not started before its time to live ran out',
                                reason = 'expired'})
      notify_waiters(KEYS[11], id, f[7], 'f' .. err)
      redis.call('HSET', key, 's', 'failed', 'ft', now, 'e', err)
      keep_finished(KEYS[10], key, id, tonumber(ARGV[5]), tonumber(ARGV[6]), now)
      emit(KEYS[12], 'failed', 'id', id, 'reason', 'expired')
    elseif f[1] then
      local attempts = tonumber(f[5] or 0) + 1
      redis.call('HSET', key, 's', 'active', 'at', attempts, 'tk', token, 'st', now, 'w', worker)
      leases[#leases + 1] = deadline
      leases[#leases + 1] = id
      reply[#reply + 1] = id
      reply[#reply + 1] = token
      reply[#reply + 1] = attempts
      reply[#reply + 1] = f[1]
      reply[#reply + 1] = f[2]
      reply[#reply + 1] = f[3] or ''
      reply[#reply + 1] = f[4] or ''
      started = started + 1
    end
    -- An id without a hash was removed while it waited; there is nothing to run.
  end
  if started > 0 then
    call_chunked('ZADD', KEYS[4], leases)
    local started_ids = {}
    for r = 2, #reply, 7 do started_ids[#started_ids + 1] = reply[r] end
    emit(KEYS[12], 'active', 'ids', table.concat(started_ids, ','), 'worker', worker)
  end
  if rate_max > 0 and started > 0 then
    if redis.call('INCRBY', KEYS[9], started) == started then
      redis.call('PEXPIRE', KEYS[9], tonumber(settings[4]))
    end
  end
  -- More work remains: wake the next blocked worker, so one enqueue wakes as many
  -- workers as there is work for, one after the other.
  if #ids == max_jobs and (redis.call('LLEN', KEYS[1]) > 0 or redis.call('ZCARD', KEYS[2]) > 0) then
    wake(KEYS[5])
  end
end

local next_due = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
if next_due[2] then
  wait_at_most(math.max(0, tonumber(next_due[2]) - now))
end
reply[1] = wait_ms
return reply

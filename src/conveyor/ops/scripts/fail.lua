-- fail: record failed attempts (a batch from one worker): schedule a retry or dead-letter.
--
-- KEYS[1] active ZSET    KEYS[2] waiting LIST   KEYS[3] prioritized ZSET   KEYS[4] delayed ZSET
-- KEYS[5] failed ZSET    KEYS[6] marker ZSET    KEYS[7] sequence counter   KEYS[8] job hash prefix
-- KEYS[9] done-list prefix   KEYS[10] cancelled ZSET   KEYS[11] events STREAM   KEYS[12] group prefix
-- KEYS[13] outbox LIST (notes for parents in flows)   KEYS[14] suspects ZSET (a suspect retried at
--   once goes back there; see sweep.lua)
-- ARGV[1] keep count for failed and cancelled jobs (-1 unlimited)   ARGV[2] keep ms (-1 forever)
-- then groups of 5: id, fencing token, error JSON, retry delay ms, refund flag.
--   delay >= 0: retry after it; -1: dead-letter (failed); -2: cancelled (aborted while running;
--   the error recorded is the one cancel.lua stored with the request, when there is one).
--   refund 1: the attempt does not count (the job was told to come back later, e.g. HTTP 429).
-- Returns: one integer per job: 1 retrying, 2 dead-lettered, 3 cancelled, 0 refused (stale token);
--   12 and 13 for 2 and 3 when a note for the job's parent (flows) was left in the outbox.
-- Errors: none.
-- @include common

local keep_count = tonumber(ARGV[1])
local keep_ms = tonumber(ARGV[2])
local now = now_ms()
local out = {}
local woke = false

for i = 3, #ARGV, 5 do
  local id = ARGV[i]
  local key = KEYS[8] .. id
  local f = redis.call('HMGET', key, 'tk', 's', 'wt', 'p', 'g', 'pa', 'ab', 'su')
  if f[1] == ARGV[i + 1] and f[2] == 'active' then
    local delay = tonumber(ARGV[i + 3])
    redis.call('ZREM', KEYS[1], id)
    if f[5] then leave_group(KEYS[12], f[5]) end
    if ARGV[i + 4] == '1' then
      redis.call('HINCRBY', key, 'at', -1)
    end
    if delay == -2 then
      -- Who cancelled it and why, as given to cancel (cancel.lua), over the worker's account.
      local err = f[7] or ARGV[i + 2]
      notify_waiters(KEYS[9], id, f[3], 'x' .. err)
      redis.call('HSET', key, 's', 'cancelled', 'ft', now, 'e', err)
      keep_finished(KEYS[10], key, id, keep_count, keep_ms, now)
      emit(KEYS[11], 'cancelled', 'id', id)
      out[#out + 1] = 3
      if f[6] then
        tell_parent(KEYS[13], f[6], id, 'x', err, now)
        out[#out] = 13
      end
    elseif delay < 0 then
      notify_waiters(KEYS[9], id, f[3], 'f' .. ARGV[i + 2])
      redis.call('HSET', key, 's', 'failed', 'ft', now, 'e', ARGV[i + 2])
      keep_finished(KEYS[5], key, id, keep_count, keep_ms, now)
      emit(KEYS[11], 'failed', 'id', id)
      out[#out + 1] = 2
      if f[6] then
        tell_parent(KEYS[13], f[6], id, 'f', ARGV[i + 2], now)
        out[#out] = 12
      end
    elseif delay == 0 then
      redis.call('HSET', key, 's', 'waiting', 'e', ARGV[i + 2])
      if f[8] then
        redis.call('ZADD', KEYS[14], now, id)
      else
        push_ready(KEYS[2], KEYS[3], KEYS[7], id, tonumber(f[4] or 0), false, f[5], KEYS[12])
      end
      woke = true
      emit(KEYS[11], 'retrying', 'id', id, 'delay', 0)
      out[#out + 1] = 1
    else
      redis.call('HSET', key, 's', 'delayed', 'due', now + delay, 'e', ARGV[i + 2])
      redis.call('ZADD', KEYS[4], now + delay, id)
      woke = true
      emit(KEYS[11], 'retrying', 'id', id, 'delay', delay)
      out[#out + 1] = 1
    end
  else
    out[#out + 1] = 0
  end
end

-- A retry is new work, and freed slots may let a worker that a concurrency limit kept
-- waiting claim again.
if woke or redis.call('LLEN', KEYS[2]) > 0 or redis.call('ZCARD', KEYS[3]) > 0
   or redis.call('ZCARD', KEYS[12] .. 'ring') > 0 then
  wake(KEYS[6])
end
trim_finished(KEYS[5], KEYS[8], keep_count, keep_ms, now)
trim_finished(KEYS[10], KEYS[8], keep_count, keep_ms, now)
return out

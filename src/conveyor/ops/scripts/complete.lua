-- complete: record the results of finished jobs (a batch from one worker).
--
-- KEYS[1] active ZSET   KEYS[2] completed ZSET   KEYS[3] job hash prefix   KEYS[4] done-list prefix
-- KEYS[5] waiting LIST  KEYS[6] prioritized ZSET KEYS[7] marker ZSET   KEYS[8] events STREAM
-- KEYS[9] group prefix   KEYS[10] outbox LIST (notes for parents in flows)
-- ARGV[1] keep count (-1 unlimited, 0 delete at once)   ARGV[2] keep ms (-1 forever, 0 delete at once)
-- then triples: id, fencing token, result JSON.
-- Returns: an array with one integer per job: 1 recorded, 2 recorded and a note for its
--   parent (flows) left in the outbox, 0 refused because the token is stale (the job was
--   re-delivered to a newer attempt, or is no longer active).
-- Errors: none.
-- @include common

local keep_count = tonumber(ARGV[1])
local keep_ms = tonumber(ARGV[2])
local now = now_ms()
local out = {}
local done_ids = {}
local kept = {}  -- score, member pairs for one ZADD to the completed set

for i = 3, #ARGV, 3 do
  local id = ARGV[i]
  local key = KEYS[3] .. id
  local f = redis.call('HMGET', key, 'tk', 's', 'wt', 'g', 'pa')
  if f[1] == ARGV[i + 1] and f[2] == 'active' then
    if f[4] then leave_group(KEYS[9], f[4]) end
    notify_waiters(KEYS[4], id, f[3], 'c' .. ARGV[i + 2])
    if keep_count == 0 or keep_ms == 0 then
      redis.call('DEL', key)
    else
      redis.call('HSET', key, 's', 'completed', 'ft', now, 'r', ARGV[i + 2])
      if keep_ms > 0 then
        redis.call('PEXPIRE', key, keep_ms)
      end
      kept[#kept + 1] = now
      kept[#kept + 1] = id
    end
    if f[5] then
      tell_parent(KEYS[10], f[5], id, 'c', ARGV[i + 2], now)
      out[#out + 1] = 2
    else
      out[#out + 1] = 1
    end
    done_ids[#done_ids + 1] = id
  else
    out[#out + 1] = 0
  end
end

if #done_ids > 0 then
  call_chunked('ZREM', KEYS[1], done_ids)
  call_chunked('ZADD', KEYS[2], kept)
  emit(KEYS[8], 'completed', 'ids', table.concat(done_ids, ','))
end
trim_finished(KEYS[2], KEYS[3], keep_count, keep_ms, now)
-- Freed slots may let a worker that a concurrency limit kept waiting claim again.
if redis.call('LLEN', KEYS[5]) > 0 or redis.call('ZCARD', KEYS[6]) > 0 or redis.call('ZCARD', KEYS[9] .. 'ring') > 0 then
  wake(KEYS[7])
end
return out

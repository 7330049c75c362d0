-- retry: move dead-lettered jobs back to waiting with fresh attempt and crash counts.
--
-- KEYS[1] failed ZSET   KEYS[2] waiting LIST   KEYS[3] prioritized ZSET   KEYS[4] marker ZSET
-- KEYS[5] sequence counter   KEYS[6] job hash prefix   KEYS[7] group prefix
-- KEYS[8] suspects ZSET (not used: a retried job starts afresh, no longer a suspect; the
--   key is here because requeue.lua shares this layout)
-- ARGV[1] 'ids' followed by job ids, or 'all' followed by the max number of jobs to move.
-- Returns: the number of jobs moved. Ids that are not in the failed state are skipped.
-- Errors: none.
-- @include common

local ids
if ARGV[1] == 'all' then
  ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
else
  ids = {}
  for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
end

local count = 0
for i = 1, #ids do
  local id = ids[i]
  local key = KEYS[6] .. id
  if redis.call('ZREM', KEYS[1], id) == 1 and redis.call('EXISTS', key) == 1 then
    redis.call('PERSIST', key)
    redis.call('HSET', key, 's', 'waiting', 'at', 0, 'cr', 0)
    redis.call('HDEL', key, 'ft', 'due', 'su')
    local f = redis.call('HMGET', key, 'p', 'g')
    push_ready(KEYS[2], KEYS[3], KEYS[5], id, tonumber(f[1] or 0), false, f[2], KEYS[7])
    count = count + 1
  end
end
if count > 0 then
  wake(KEYS[4])
end
return count

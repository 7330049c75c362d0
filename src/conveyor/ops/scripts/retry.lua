-- retry: move dead-lettered jobs back to waiting with fresh attempt and crash counts.
--
-- KEYS[1] failed_key ZSET   KEYS[2] waiting_key LIST   KEYS[3] prioritized_key ZSET
-- KEYS[4] marker_key ZSET   KEYS[5] sequence_key counter   KEYS[6] job_prefix of job hashes
-- KEYS[7] group_prefix   KEYS[8] suspects_key ZSET (not used: a retried job starts afresh,
--   no longer a suspect; the key is here because requeue.lua has this layout)
-- ARGV[1] mode: 'ids' followed by job ids (from first_id (2) on), or 'all' followed by
--   ARGV[2] limit: the max number of jobs to move.
-- Returns: the number of jobs moved. Ids that are not in the failed state are skipped.
-- Errors: none.
-- @include common

local failed_key = KEYS[1]
local waiting_key = KEYS[2]
local prioritized_key = KEYS[3]
local marker_key = KEYS[4]
local sequence_key = KEYS[5]
local job_prefix = KEYS[6]
local group_prefix = KEYS[7]
local suspects_key = KEYS[8]  -- not used (see the header)
local mode = ARGV[1]
local limit = ARGV[2]  -- with 'ids', the first id instead
local first_id = 2

local ids
if mode == 'all' then
  ids = redis.call('ZRANGE', failed_key, 0, tonumber(limit) - 1)
else
  ids = {}
  for i = first_id, #ARGV do ids[#ids + 1] = ARGV[i] end
end

local count = 0
for i = 1, #ids do
  local id = ids[i]
  local key = job_prefix .. id
  if redis.call('ZREM', failed_key, id) == 1 and redis.call('EXISTS', key) == 1 then
    redis.call('PERSIST', key)
    redis.call('HSET', key, 's', 'waiting', 'at', 0, 'cr', 0, 'rd', now_ms())
    redis.call('HDEL', key, 'ft', 'due', 'su', 'al')
    local f = redis.call('HMGET', key, 'p', 'g')
    push_ready(waiting_key, prioritized_key, sequence_key, id, tonumber(f[1] or 0), false, f[2], group_prefix)
    count = count + 1
  end
end
if count > 0 then
  wake(marker_key)
end
return count

-- remove: delete one job that is not running.
--
-- KEYS[1] waiting_key LIST   KEYS[2] prioritized_key ZSET   KEYS[3] delayed_key ZSET
-- KEYS[4] completed_key ZSET   KEYS[5] failed_key ZSET   KEYS[6] job_prefix of job hashes
-- KEYS[7] cancelled_key ZSET   KEYS[8] group_prefix   KEYS[9] parents_key ZSET
-- KEYS[10] outbox_key LIST (notes for parents in flows)   KEYS[11] suspects_key ZSET
-- KEYS[12] history_key STREAM   KEYS[13] history_feed_key HASH (the history hand-off, see
--   include/history.lua: a job removed before it finished is handed off as removed)
-- ARGV[1] id of the job
-- Returns: the state the job was in.
-- Errors: CONVEYOR:NOT_FOUND when there is no such job; CONVEYOR:INVALID_STATE when it is
--   active (a worker is running it; abort it instead).
-- @include common
-- @include history

local waiting_key = KEYS[1]
local prioritized_key = KEYS[2]
local delayed_key = KEYS[3]
local completed_key = KEYS[4]
local failed_key = KEYS[5]
local job_prefix = KEYS[6]
local cancelled_key = KEYS[7]
local group_prefix = KEYS[8]
local parents_key = KEYS[9]
local outbox_key = KEYS[10]
local suspects_key = KEYS[11]
local history_key = KEYS[12]
local history_feed_key = KEYS[13]
local id = ARGV[1]

local key = job_prefix .. id
local f = redis.call('HMGET', key, 's', 'g', 'pa')
local state = f[1]
if not state then
  return redis.error_reply('CONVEYOR:NOT_FOUND no job ' .. id)
end
if state == 'active' then
  return redis.error_reply('CONVEYOR:INVALID_STATE job ' .. id .. ' is running; it cannot be removed now')
end
if state == 'waiting' then
  unlist_waiting(waiting_key, prioritized_key, suspects_key, group_prefix, f[2], id)
elseif state == 'delayed' then
  redis.call('ZREM', delayed_key, id)
elseif state == 'waiting_children' then
  redis.call('ZREM', parents_key, id)
elseif state == 'completed' then
  redis.call('ZREM', completed_key, id)
elseif state == 'failed' then
  redis.call('ZREM', failed_key, id)
elseif state == 'cancelled' then
  redis.call('ZREM', cancelled_key, id)
end
if state == 'waiting' or state == 'delayed' or state == 'waiting_children' then
  local feed = history_feed(history_key, history_feed_key)
  if feed then
    hand_off(feed, key, id, 'removed', now_ms(), false)
    close_hand_off(feed)
  end
end
redis.call('DEL', key)
-- A child that will never run must not leave its parent waiting forever.
if f[3] and (state == 'waiting' or state == 'delayed' or state == 'waiting_children') then
  local err = cjson.encode({type = 'Removed', message = 'the job was removed before it ran', reason = 'removed'})
  tell_parent(outbox_key, f[3], id, 'x', err, now_ms())
end
return state

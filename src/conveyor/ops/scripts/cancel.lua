-- cancel: cancel a job that has not run yet, or ask the worker running it to abort it.
--
-- KEYS[1] waiting_key LIST   KEYS[2] prioritized_key ZSET   KEYS[3] delayed_key ZSET
-- KEYS[4] cancelled_key ZSET   KEYS[5] job_prefix of job hashes   KEYS[6] done_prefix of done lists
-- KEYS[7] events_key STREAM   KEYS[8] group_prefix   KEYS[9] outbox_key LIST (notes for parents
--   in flows)   KEYS[10] parents_key ZSET   KEYS[11] suspects_key ZSET   KEYS[12] history_key STREAM
-- KEYS[13] history_feed_key HASH (the history hand-off, see include/history.lua)
-- KEYS[14] metrics_prefix of the queue's figures (see include/metrics.lua)   KEYS[15] settings_key HASH
-- ARGV[1] id of the job   ARGV[2] reason JSON ({"by": ..., "reason": ...})
-- ARGV[3] keep_count, ARGV[4] keep_ms: retention of cancelled jobs
-- Returns: 'cancelled' when the job was waiting or delayed and is now cancelled;
--   'aborting' when it is running: its worker sees the request at its next heartbeat,
--   stops the job and records it as cancelled.
-- Errors: CONVEYOR:NOT_FOUND when there is no such job; CONVEYOR:INVALID_STATE when it
--   already finished.
-- @include common
-- @include history
-- @include metrics

local waiting_key = KEYS[1]
local prioritized_key = KEYS[2]
local delayed_key = KEYS[3]
local cancelled_key = KEYS[4]
local job_prefix = KEYS[5]
local done_prefix = KEYS[6]
local events_key = KEYS[7]
local group_prefix = KEYS[8]
local outbox_key = KEYS[9]
local parents_key = KEYS[10]
local suspects_key = KEYS[11]
local history_key = KEYS[12]
local history_feed_key = KEYS[13]
local metrics_prefix = KEYS[14]
local settings_key = KEYS[15]
local id = ARGV[1]
local reason = ARGV[2]
local keep_count = tonumber(ARGV[3])
local keep_ms = tonumber(ARGV[4])

local key = job_prefix .. id
local f = redis.call('HMGET', key, 's', 'wt', 'g', 'pa')
local state = f[1]
if not state then
  return redis.error_reply('CONVEYOR:NOT_FOUND no job ' .. id)
end
if state == 'active' then
  redis.call('HSET', key, 'ab', reason)
  emit(events_key, 'aborting', 'id', id)
  return 'aborting'
end
if state == 'waiting' then
  unlist_waiting(waiting_key, prioritized_key, suspects_key, group_prefix, f[3], id)
elseif state == 'delayed' then
  redis.call('ZREM', delayed_key, id)
elseif state == 'waiting_children' then
  redis.call('ZREM', parents_key, id)
else
  return redis.error_reply('CONVEYOR:INVALID_STATE job ' .. id .. ' already ' .. state)
end
local now = now_ms()
notify_waiters(done_prefix, id, f[2], 'x' .. reason)
local feed = history_feed(history_key, history_feed_key)
if feed then
  hand_off(feed, key, id, 'cancelled', now, reason)
  close_hand_off(feed)
end
redis.call('HSET', key, 's', 'cancelled', 'ft', now, 'e', reason)
keep_finished(cancelled_key, key, id, keep_count, keep_ms, now)
trim_finished(cancelled_key, job_prefix, keep_count, keep_ms, now)
emit(events_key, 'cancelled', 'id', id)
local figures = metrics_new(metrics_prefix, settings_key)
metrics_count(figures, 'cancelled', 1)
metrics_flush(figures, now)
if f[4] then tell_parent(outbox_key, f[4], id, 'x', reason, now) end
return 'cancelled'

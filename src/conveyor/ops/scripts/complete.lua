-- complete: record the results of finished jobs (a batch from one worker).
--
-- KEYS[1] active_key ZSET   KEYS[2] completed_key ZSET   KEYS[3] job_prefix of job hashes
-- KEYS[4] done_prefix of done lists   KEYS[5] waiting_key LIST   KEYS[6] prioritized_key ZSET
-- KEYS[7] marker_key ZSET   KEYS[8] events_key STREAM   KEYS[9] group_prefix
-- KEYS[10] outbox_key LIST (notes for parents in flows)   KEYS[11] history_key STREAM
-- KEYS[12] history_feed_key HASH (the history hand-off, see include/history.lua)
-- KEYS[13] metrics_prefix of the queue's figures (see include/metrics.lua)   KEYS[14] settings_key HASH
-- ARGV[1] keep_count (-1 unlimited, 0 delete at once)   ARGV[2] keep_ms (-1 forever, 0 delete at once)
-- ARGV[3] times: "slot increment ..." pairs, the wait and run times the worker measured since
--   its last acknowledgement of the queue, for the queue's figures (include/metrics.lua)
-- then, from first_result (4) on, triples: id, fencing token, result JSON.
-- Returns: an array with one integer per job: 1 recorded, 2 recorded and a note for its
--   parent (flows) left in the outbox, 4 recorded already (by an earlier try of this batch
--   that reached Redis, though its reply was lost with the connection), 0 refused because
--   the token is stale (the job was re-delivered to a newer attempt, or is no longer active).
-- Errors: none.
-- @include common
-- @include history
-- @include metrics

local active_key = KEYS[1]
local completed_key = KEYS[2]
local job_prefix = KEYS[3]
local done_prefix = KEYS[4]
local waiting_key = KEYS[5]
local prioritized_key = KEYS[6]
local marker_key = KEYS[7]
local events_key = KEYS[8]
local group_prefix = KEYS[9]
local outbox_key = KEYS[10]
local history_key = KEYS[11]
local history_feed_key = KEYS[12]
local metrics_prefix = KEYS[13]
local settings_key = KEYS[14]
local keep_count = tonumber(ARGV[1])
local keep_ms = tonumber(ARGV[2])
local times = ARGV[3]
local first_result = 4

local now = now_ms()
local feed = history_feed(history_key, history_feed_key)
local figures = metrics_new(metrics_prefix, settings_key)
metrics_given(figures, times)
local out = {}
local done_ids = {}
local READ = {tk = 1, s = 2, wt = 3, g = 4, pa = 5}
local kept = {}  -- score, member pairs for one ZADD to the completed set

for i = first_result, #ARGV, 3 do
  local id, token, result = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local key = job_prefix .. id
  local f, hash
  if feed then  -- the job is read whole, once, for its hand-off
    hash = redis.call('HGETALL', key)
    f = pick_fields(hash, READ, 5)
  else
    f = redis.call('HMGET', key, 'tk', 's', 'wt', 'g', 'pa')
  end
  if f[1] == token and f[2] == 'active' then
    if f[4] then leave_group(group_prefix, f[4]) end
    notify_waiters(done_prefix, id, f[3], 'c' .. result)
    if feed then hand_off_fields(feed, hash, id, 'completed', now, result) end
    if keep_count == 0 or keep_ms == 0 then
      redis.call('DEL', key)
    else
      redis.call('HSET', key, 's', 'completed', 'ft', now, 'r', result)
      if keep_ms > 0 then
        redis.call('PEXPIRE', key, keep_ms)
      end
      kept[#kept + 1] = now
      kept[#kept + 1] = id
    end
    if f[5] then
      tell_parent(outbox_key, f[5], id, 'c', result, now)
      out[#out + 1] = 2
    else
      out[#out + 1] = 1
    end
    done_ids[#done_ids + 1] = id
  elseif f[1] == token and f[2] == 'completed' then
    -- Only this script makes a job completed, and then no attempt follows: it was this one.
    out[#out + 1] = ALREADY_RECORDED
  else
    out[#out + 1] = 0
  end
end

if feed then close_hand_off(feed) end
metrics_count(figures, 'completed', #done_ids)
metrics_flush(figures, now)
if #done_ids > 0 then
  call_chunked('ZREM', active_key, done_ids)
  call_chunked('ZADD', completed_key, kept)
  emit(events_key, 'completed', 'ids', table.concat(done_ids, ','))
end
trim_finished(completed_key, job_prefix, keep_count, keep_ms, now)
-- Freed slots may let a worker that a concurrency limit kept waiting claim again.
if redis.call('LLEN', waiting_key) > 0 or redis.call('ZCARD', prioritized_key) > 0
   or redis.call('ZCARD', group_prefix .. 'ring') > 0 then
  wake(marker_key)
end
return out

-- child: tell the parent of a flow that one of its children finished. Called by a worker
-- that drains the outbox of the child's queue (see tell_parent in include/common.lua).
-- Idempotent: each child counts once, so two workers delivering the same note, or a worker
-- that died after this script but before deleting the note, change nothing.
--
-- KEYS[1] waiting_key LIST   KEYS[2] prioritized_key ZSET   KEYS[3] parents_key ZSET
-- KEYS[4] sequence_key counter   KEYS[5] job_prefix of job hashes   KEYS[6] marker_key ZSET
-- KEYS[7] failed_key ZSET   KEYS[8] done_prefix of done lists   KEYS[9] events_key STREAM
-- KEYS[10] group_prefix   KEYS[11] outbox_key LIST   KEYS[12] history_key STREAM
-- KEYS[13] history_feed_key HASH (the history hand-off, see include/history.lua)
--   (all of the parent's queue)
-- ARGV[1] id of the parent   ARGV[2] child: the child's reference "<queue> <id>"
-- ARGV[3] kind: 'c' completed, 'f' failed, 'x' cancelled or removed
-- ARGV[4] payload: the child's result JSON ('c') or error JSON
-- ARGV[5] failed_keep_count, ARGV[6] failed_keep_ms: retention of failed jobs
-- Returns: 'missing' when there is no such parent (not created yet, or removed);
--   'ignored' when the parent no longer waits (it failed or was cancelled);
--   'duplicate' when this child was counted before; 'waiting' when other children remain;
--   'released' when this was the last one: the parent is waiting to run, with its
--   children's outcomes in field 'co' ({"pass": false, true or "list", "children": [[ref, kind, value], ...]},
--   children in the order they were given);
--   'failed' when the child failed and the parent's policy is to fail with it, 'failed+'
--   when that parent is itself a child and left a note in its own queue's outbox.
-- Errors: none.
-- @include common
-- @include history

local waiting_key = KEYS[1]
local prioritized_key = KEYS[2]
local parents_key = KEYS[3]
local sequence_key = KEYS[4]
local job_prefix = KEYS[5]
local marker_key = KEYS[6]
local failed_key = KEYS[7]
local done_prefix = KEYS[8]
local events_key = KEYS[9]
local group_prefix = KEYS[10]
local outbox_key = KEYS[11]
local history_key = KEYS[12]
local history_feed_key = KEYS[13]
local id = ARGV[1]
local child = ARGV[2]
local kind = ARGV[3]
local payload = ARGV[4]
local failed_keep_count = tonumber(ARGV[5])
local failed_keep_ms = tonumber(ARGV[6])

local key = job_prefix .. id
local f = redis.call('HMGET', key, 's', 'fp', 'pr', 'ch', 'p', 'g', 'wt', 'pa')
if not f[1] then
  return 'missing'
end
if f[1] ~= 'waiting_children' then
  return 'ignored'
end
if redis.call('HSETNX', key, 'd:' .. child, kind .. payload) == 0 then
  return 'duplicate'
end
local now = now_ms()

if kind ~= 'c' and f[2] ~= 'ignore' then
  local ok, child_error = pcall(cjson.decode, payload)
  local why = ok and type(child_error) == 'table' and child_error.message or 'no message'
  local err = cjson.encode({
    type = 'ChildFailed',
    reason = 'child_failed',
    child = child,
    message = 'child ' .. child .. (kind == 'x' and ' was cancelled: ' or ' failed: ') .. tostring(why),
  })
  redis.call('ZREM', parents_key, id)
  notify_waiters(done_prefix, id, f[7], 'f' .. err)
  local feed = history_feed(history_key, history_feed_key)
  if feed then
    hand_off(feed, key, id, 'failed', now, err)
    close_hand_off(feed)
  end
  redis.call('HSET', key, 's', 'failed', 'ft', now, 'e', err)
  keep_finished(failed_key, key, id, failed_keep_count, failed_keep_ms, now)
  emit(events_key, 'failed', 'id', id, 'reason', 'child_failed')
  if f[8] then
    tell_parent(outbox_key, f[8], id, 'f', err, now)
    return 'failed+'
  end
  return 'failed'
end

if redis.call('HINCRBY', key, 'dp', -1) > 0 then
  return 'waiting'
end

-- The last child: gather the outcomes in the order the children were given. Results are
-- JSON already, so they are spliced in as they are rather than decoded and encoded again.
local refs = cjson.decode(f[4] or '[]')
local parts, fields = {}, {}
for i = 1, #refs do
  local field = 'd:' .. refs[i]
  local outcome = redis.call('HGET', key, field) or 'x{"message":"no outcome recorded"}'
  parts[i] = '[' .. cjson.encode(refs[i]) .. ',"' .. string.sub(outcome, 1, 1) .. '",' .. string.sub(outcome, 2) .. ']'
  fields[i] = field
end
call_chunked('HDEL', key, fields)
local passed = (f[3] == '2' and '"list"') or (f[3] == '1' and 'true') or 'false'
local children = '{"pass":' .. passed .. ',"children":[' .. table.concat(parts, ',') .. ']}'
redis.call('HSET', key, 's', 'waiting', 'co', children, 'rd', now)  -- ready since its children ended
redis.call('ZREM', parents_key, id)
push_ready(waiting_key, prioritized_key, sequence_key, id, tonumber(f[5] or 0), false, f[6], group_prefix)
wake(marker_key)
emit(events_key, 'waiting', 'id', id, 'reason', 'children_done')
return 'released'

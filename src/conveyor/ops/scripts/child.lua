-- child: tell the parent of a flow that one of its children finished. Called by a worker
-- that drains the outbox of the child's queue (see tell_parent in include/common.lua).
-- Idempotent: each child counts once, so two workers delivering the same note, or a worker
-- that died after this script but before deleting the note, change nothing.
--
-- KEYS[1] waiting LIST   KEYS[2] prioritized ZSET   KEYS[3] parents ZSET   KEYS[4] sequence counter
-- KEYS[5] job hash prefix   KEYS[6] marker ZSET   KEYS[7] failed ZSET   KEYS[8] done-list prefix
-- KEYS[9] events STREAM   KEYS[10] group prefix   KEYS[11] outbox LIST
--   (all of the parent's queue)
-- ARGV[1] parent id   ARGV[2] the child's reference "<queue> <id>"
-- ARGV[3] 'c' completed, 'f' failed, 'x' cancelled or removed
-- ARGV[4] the child's result JSON ('c') or error JSON
-- ARGV[5] keep count for failed jobs   ARGV[6] keep ms for failed jobs
-- Returns: 'missing' when there is no such parent (not created yet, or removed);
--   'ignored' when the parent no longer waits (it failed or was cancelled);
--   'duplicate' when this child was counted before; 'waiting' when other children remain;
--   'released' when this was the last one: the parent is waiting to run, with its
--   children's outcomes in field 'co' ({"pass": bool, "children": [[ref, kind, value], ...]},
--   children in the order they were given);
--   'failed' when the child failed and the parent's policy is to fail with it, 'failed+'
--   when that parent is itself a child and left a note in its own queue's outbox.
-- Errors: none.
-- @include common

local id = ARGV[1]
local key = KEYS[5] .. id
local f = redis.call('HMGET', key, 's', 'fp', 'pr', 'ch', 'p', 'g', 'wt', 'pa')
if not f[1] then
  return 'missing'
end
if f[1] ~= 'waiting_children' then
  return 'ignored'
end
if redis.call('HSETNX', key, 'd:' .. ARGV[2], ARGV[3] .. ARGV[4]) == 0 then
  return 'duplicate'
end
local now = now_ms()

if ARGV[3] ~= 'c' and f[2] ~= 'ignore' then
  local ok, child_error = pcall(cjson.decode, ARGV[4])
  local why = ok and type(child_error) == 'table' and child_error.message or 'no message'
  local err = cjson.encode({
    type = 'ChildFailed',
    reason = 'child_failed',
    child = ARGV[2],
    message = 'child ' .. ARGV[2] .. (ARGV[3] == 'x' and ' was cancelled: ' or ' failed: ') .. tostring(why),
  })
  redis.call('ZREM', KEYS[3], id)
  notify_waiters(KEYS[8], id, f[7], 'f' .. err)
  redis.call('HSET', key, 's', 'failed', 'ft', now, 'e', err)
  keep_finished(KEYS[7], key, id, tonumber(ARGV[5]), tonumber(ARGV[6]), now)
  emit(KEYS[9], 'failed', 'id', id, 'reason', 'child_failed')
  if f[8] then
    tell_parent(KEYS[11], f[8], id, 'f', err, now)
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
local children = '{"pass":' .. (f[3] == '1' and 'true' or 'false') .. ',"children":[' .. table.concat(parts, ',') .. ']}'
redis.call('HSET', key, 's', 'waiting', 'co', children)
redis.call('ZREM', KEYS[3], id)
push_ready(KEYS[1], KEYS[2], KEYS[4], id, tonumber(f[5] or 0), false, f[6], KEYS[10])
wake(KEYS[6])
emit(KEYS[9], 'waiting', 'id', id, 'reason', 'children_done')
return 'released'

-- purge: delete up to a limit of jobs in the given states; call again while it returns more.
--
-- KEYS[1] waiting_key LIST   KEYS[2] prioritized_key ZSET   KEYS[3] delayed_key ZSET
-- KEYS[4] completed_key ZSET   KEYS[5] failed_key ZSET   KEYS[6] job_prefix of job hashes
-- KEYS[7] cancelled_key ZSET   KEYS[8] group_prefix   KEYS[9] parents_key ZSET
-- KEYS[10] outbox_key LIST (notes for parents in flows)   KEYS[11] suspects_key ZSET
-- KEYS[12] history_key STREAM   KEYS[13] history_feed_key HASH (the history hand-off, see
--   include/history.lua: a job removed before it finished is handed off as removed)
-- ARGV[1] limit: max jobs to delete in this call, then, from first_state (2) on, state names
--   (waiting, delayed, completed, failed, cancelled, waiting_children). Children of flows
--   that are purged before they ran tell their parents (as cancelled).
-- Returns: {deleted, remaining} where remaining counts jobs still in the given states.
-- Errors: none. Active jobs are never purged: their workers own them.
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
local limit = tonumber(ARGV[1])
local first_state = 2

local deleted = 0
local sets = {delayed = delayed_key, completed = completed_key, failed = failed_key, cancelled = cancelled_key,
              waiting_children = parents_key}
local unfinished = {waiting = true, delayed = true, waiting_children = true}
local purged = nil
local feed = history_feed(history_key, history_feed_key)
local now = now_ms()

local function drop(ids, state)
  for i = 1, #ids do
    local key = job_prefix .. ids[i]
    if unfinished[state] then
      if feed then hand_off(feed, key, ids[i], 'removed', now, false) end
      local parent = redis.call('HGET', key, 'pa')
      if parent then
        purged = purged or cjson.encode({type = 'Removed', message = 'the job was purged before it ran',
                                         reason = 'purged'})
        tell_parent(outbox_key, parent, ids[i], 'x', purged, now)
      end
    end
    redis.call('DEL', key)
  end
  deleted = deleted + #ids
end

-- Deletes the first jobs of a sorted set, as many as the limit still allows.
local function drop_head_of(zset, state)
  local room = limit - deleted
  if room > 0 then
    local ids = redis.call('ZRANGE', zset, 0, room - 1)
    if #ids > 0 then
      redis.call('ZREMRANGEBYRANK', zset, 0, #ids - 1)
      drop(ids, state)
    end
  end
end

for s = first_state, #ARGV do
  local state = ARGV[s]
  if state == 'waiting' then
    drop_head_of(suspects_key, state)
    local room = limit - deleted
    if room > 0 then
      local ids = redis.call('LRANGE', waiting_key, 0, room - 1)
      if #ids > 0 then
        redis.call('LTRIM', waiting_key, #ids, -1)
        drop(ids, state)
      end
    end
    drop_head_of(prioritized_key, state)
    local groups = redis.call('SMEMBERS', group_prefix .. 'known')
    for g = 1, #groups do
      if limit - deleted <= 0 then break end
      local line = group_prefix .. 'q:' .. groups[g]
      drop_head_of(line, state)
      if redis.call('EXISTS', line) == 0 then
        redis.call('SREM', group_prefix .. 'known', groups[g])
        redis.call('ZREM', group_prefix .. 'ring', groups[g])
        redis.call('ZREM', group_prefix .. 'limited', groups[g])
      end
    end
  elseif sets[state] then
    drop_head_of(sets[state], state)
  end
end

if feed then close_hand_off(feed) end
local remaining = 0
for s = first_state, #ARGV do
  local state = ARGV[s]
  if state == 'waiting' then
    remaining = remaining + redis.call('LLEN', waiting_key) + redis.call('ZCARD', prioritized_key)
                + grouped_waiting(group_prefix) + redis.call('ZCARD', suspects_key)
  elseif sets[state] then
    remaining = remaining + redis.call('ZCARD', sets[state])
  end
end
return {deleted, remaining}

-- purge: delete up to a limit of jobs in the given states; call again while it returns more.
--
-- KEYS[1] waiting LIST   KEYS[2] prioritized ZSET   KEYS[3] delayed ZSET   KEYS[4] completed ZSET
-- KEYS[5] failed ZSET    KEYS[6] job hash prefix   KEYS[7] cancelled ZSET   KEYS[8] group prefix
-- KEYS[9] parents ZSET   KEYS[10] outbox LIST (notes for parents in flows)   KEYS[11] suspects ZSET
-- ARGV[1] max jobs to delete in this call, then state names (waiting, delayed, completed,
--   failed, cancelled, waiting_children). Children of flows that are purged before they ran
--   tell their parents (as cancelled).
-- Returns: {deleted, remaining} where remaining counts jobs still in the given states.
-- Errors: none. Active jobs are never purged: their workers own them.
-- @include common

local limit = tonumber(ARGV[1])
local deleted = 0
local sets = {delayed = KEYS[3], completed = KEYS[4], failed = KEYS[5], cancelled = KEYS[7],
              waiting_children = KEYS[9]}
local unfinished = {waiting = true, delayed = true, waiting_children = true}
local purged = nil

local function drop(ids, state)
  for i = 1, #ids do
    local key = KEYS[6] .. ids[i]
    if unfinished[state] then
      local parent = redis.call('HGET', key, 'pa')
      if parent then
        purged = purged or cjson.encode({type = 'Removed', message = 'the job was purged before it ran',
                                         reason = 'purged'})
        tell_parent(KEYS[10], parent, ids[i], 'x', purged, now_ms())
      end
    end
    redis.call('DEL', key)
  end
  deleted = deleted + #ids
end

for s = 2, #ARGV do
  local state = ARGV[s]
  if state == 'waiting' then
    local room = limit - deleted
    if room > 0 then
      local ids = redis.call('ZRANGE', KEYS[11], 0, room - 1)
      if #ids > 0 then
        redis.call('ZREMRANGEBYRANK', KEYS[11], 0, #ids - 1)
        drop(ids, state)
      end
    end
    room = limit - deleted
    if room > 0 then
      local ids = redis.call('LRANGE', KEYS[1], 0, room - 1)
      if #ids > 0 then
        redis.call('LTRIM', KEYS[1], #ids, -1)
        drop(ids, state)
      end
    end
    room = limit - deleted
    if room > 0 then
      local ids = redis.call('ZRANGE', KEYS[2], 0, room - 1)
      if #ids > 0 then
        redis.call('ZREMRANGEBYRANK', KEYS[2], 0, #ids - 1)
        drop(ids, state)
      end
    end
    local groups = redis.call('SMEMBERS', KEYS[8] .. 'known')
    for g = 1, #groups do
      room = limit - deleted
      if room <= 0 then break end
      local line = KEYS[8] .. 'q:' .. groups[g]
      local ids = redis.call('ZRANGE', line, 0, room - 1)
      if #ids > 0 then
        redis.call('ZREMRANGEBYRANK', line, 0, #ids - 1)
        drop(ids, state)
      end
      if redis.call('EXISTS', line) == 0 then
        redis.call('SREM', KEYS[8] .. 'known', groups[g])
        redis.call('ZREM', KEYS[8] .. 'ring', groups[g])
        redis.call('ZREM', KEYS[8] .. 'limited', groups[g])
      end
    end
  elseif sets[state] then
    local room = limit - deleted
    if room > 0 then
      local ids = redis.call('ZRANGE', sets[state], 0, room - 1)
      if #ids > 0 then
        redis.call('ZREMRANGEBYRANK', sets[state], 0, #ids - 1)
        drop(ids, state)
      end
    end
  end
end

local remaining = 0
for s = 2, #ARGV do
  local state = ARGV[s]
  if state == 'waiting' then
    remaining = remaining + redis.call('LLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2]) + grouped_waiting(KEYS[8])
                + redis.call('ZCARD', KEYS[11])
  elseif sets[state] then
    remaining = remaining + redis.call('ZCARD', sets[state])
  end
end
return {deleted, remaining}

-- list: one page of the jobs in a state, in the order they will run (waiting, delayed)
-- or most recent first (completed, failed, cancelled); active by lease deadline. Grouped
-- waiting jobs come after the others, group by group (by group name), each group in order.
-- Suspects (see sweep.lua) are waiting jobs too, and come first: they are served first.
--
-- KEYS[1] waiting LIST   KEYS[2] prioritized ZSET   KEYS[3] delayed ZSET   KEYS[4] active ZSET
-- KEYS[5] completed ZSET KEYS[6] failed ZSET        KEYS[7] job hash prefix   KEYS[8] cancelled ZSET
-- KEYS[9] group prefix   KEYS[10] parents ZSET   KEYS[11] suspects ZSET
-- ARGV[1] state   ARGV[2] offset   ARGV[3] page size
-- Returns: {total, id1, fields1, id2, fields2, ...} where fields is the job's HGETALL reply.
-- Errors: CONVEYOR:INVALID_STATE for an unknown state name.

local state = ARGV[1]
local offset = tonumber(ARGV[2])
local size = tonumber(ARGV[3])
local ids = {}
local total = 0

local function zpage(key, reverse)
  total = redis.call('ZCARD', key)
  if reverse then
    return redis.call('ZREVRANGE', key, offset, offset + size - 1)
  end
  return redis.call('ZRANGE', key, offset, offset + size - 1)
end

if state == 'waiting' then
  -- Run order: suspects, positive priorities, then the FIFO list (oldest at the right), then
  -- negative.
  local suspects = redis.call('ZCARD', KEYS[11])
  local high = redis.call('ZCOUNT', KEYS[2], '-inf', '(0')
  local plain = redis.call('LLEN', KEYS[1])
  local low = redis.call('ZCARD', KEYS[2]) - high
  local ungrouped = suspects + high + plain + low
  total = ungrouped
  local groups = redis.call('SMEMBERS', KEYS[9] .. 'known')
  table.sort(groups)
  local group_sizes = {}
  for g = 1, #groups do
    group_sizes[g] = redis.call('ZCARD', KEYS[9] .. 'q:' .. groups[g])
    total = total + group_sizes[g]
  end
  local pos = offset
  while #ids < size and pos < ungrouped do
    local at = pos - suspects
    if at < 0 then
      ids[#ids + 1] = redis.call('ZRANGE', KEYS[11], pos, pos)[1]
    elseif at < high then
      ids[#ids + 1] = redis.call('ZRANGE', KEYS[2], at, at)[1]
    elseif at < high + plain then
      ids[#ids + 1] = redis.call('LINDEX', KEYS[1], -(at - high) - 1)
    else
      ids[#ids + 1] = redis.call('ZRANGE', KEYS[2], at - plain, at - plain)[1]
    end
    pos = pos + 1
  end
  local start = ungrouped
  for g = 1, #groups do
    if #ids >= size then break end
    local stop = start + group_sizes[g]
    if pos < stop then
      local page = redis.call('ZRANGE', KEYS[9] .. 'q:' .. groups[g], pos - start, pos - start + size - #ids - 1)
      for i = 1, #page do ids[#ids + 1] = page[i] end
      pos = pos + #page
    end
    start = stop
  end
elseif state == 'delayed' then
  ids = zpage(KEYS[3], false)
elseif state == 'active' then
  ids = zpage(KEYS[4], false)
elseif state == 'completed' then
  ids = zpage(KEYS[5], true)
elseif state == 'failed' then
  ids = zpage(KEYS[6], true)
elseif state == 'cancelled' then
  ids = zpage(KEYS[8], true)
elseif state == 'waiting_children' then
  ids = zpage(KEYS[10], false)
else
  return redis.error_reply('CONVEYOR:INVALID_STATE unknown state ' .. state)
end

local reply = {total}
for i = 1, #ids do
  reply[#reply + 1] = ids[i]
  reply[#reply + 1] = redis.call('HGETALL', KEYS[7] .. ids[i])
end
return reply

-- list: one page of the jobs in a state, in the order they will run (waiting, delayed)
-- or most recent first (completed, failed, cancelled); active by lease deadline. Grouped
-- waiting jobs come after the others, group by group (by group name), each group in order.
-- Suspects (see sweep.lua) are waiting jobs too, and come first: they are served first.
--
-- KEYS[1] waiting_key LIST   KEYS[2] prioritized_key ZSET   KEYS[3] delayed_key ZSET
-- KEYS[4] active_key ZSET   KEYS[5] completed_key ZSET   KEYS[6] failed_key ZSET
-- KEYS[7] job_prefix of job hashes   KEYS[8] cancelled_key ZSET   KEYS[9] group_prefix
-- KEYS[10] parents_key ZSET   KEYS[11] suspects_key ZSET
-- ARGV[1] state   ARGV[2] offset   ARGV[3] size of the page
-- Returns: {total, id1, fields1, id2, fields2, ...} where fields is the job's HGETALL reply.
-- Errors: CONVEYOR:INVALID_STATE for an unknown state name.

local waiting_key = KEYS[1]
local prioritized_key = KEYS[2]
local delayed_key = KEYS[3]
local active_key = KEYS[4]
local completed_key = KEYS[5]
local failed_key = KEYS[6]
local job_prefix = KEYS[7]
local cancelled_key = KEYS[8]
local group_prefix = KEYS[9]
local parents_key = KEYS[10]
local suspects_key = KEYS[11]
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
  local suspects = redis.call('ZCARD', suspects_key)
  local high = redis.call('ZCOUNT', prioritized_key, '-inf', '(0')
  local plain = redis.call('LLEN', waiting_key)
  local low = redis.call('ZCARD', prioritized_key) - high
  local ungrouped = suspects + high + plain + low
  total = ungrouped
  local groups = redis.call('SMEMBERS', group_prefix .. 'known')
  table.sort(groups)
  local group_sizes = {}
  for g = 1, #groups do
    group_sizes[g] = redis.call('ZCARD', group_prefix .. 'q:' .. groups[g])
    total = total + group_sizes[g]
  end
  local pos = offset
  while #ids < size and pos < ungrouped do
    local at = pos - suspects
    if at < 0 then
      ids[#ids + 1] = redis.call('ZRANGE', suspects_key, pos, pos)[1]
    elseif at < high then
      ids[#ids + 1] = redis.call('ZRANGE', prioritized_key, at, at)[1]
    elseif at < high + plain then
      ids[#ids + 1] = redis.call('LINDEX', waiting_key, -(at - high) - 1)
    else
      ids[#ids + 1] = redis.call('ZRANGE', prioritized_key, at - plain, at - plain)[1]
    end
    pos = pos + 1
  end
  local start = ungrouped
  for g = 1, #groups do
    if #ids >= size then break end
    local stop = start + group_sizes[g]
    if pos < stop then
      local page = redis.call('ZRANGE', group_prefix .. 'q:' .. groups[g], pos - start, pos - start + size - #ids - 1)
      for i = 1, #page do ids[#ids + 1] = page[i] end
      pos = pos + #page
    end
    start = stop
  end
elseif state == 'delayed' then
  ids = zpage(delayed_key, false)
elseif state == 'active' then
  ids = zpage(active_key, false)
elseif state == 'completed' then
  ids = zpage(completed_key, true)
elseif state == 'failed' then
  ids = zpage(failed_key, true)
elseif state == 'cancelled' then
  ids = zpage(cancelled_key, true)
elseif state == 'waiting_children' then
  ids = zpage(parents_key, false)
else
  return redis.error_reply('CONVEYOR:INVALID_STATE unknown state ' .. state)
end

local reply = {total}
for i = 1, #ids do
  reply[#reply + 1] = ids[i]
  reply[#reply + 1] = redis.call('HGETALL', job_prefix .. ids[i])
end
return reply

-- enqueue: create one or many jobs in one call.
--
-- KEYS[1] waiting LIST     KEYS[2] prioritized ZSET   KEYS[3] delayed ZSET
-- KEYS[4] marker ZSET      KEYS[5] sequence counter   KEYS[6] job hash prefix
-- KEYS[7] events STREAM
-- ARGV: for each job: id, task name, args JSON, E, then E pairs of optional fields:
--   'k' kwargs JSON, 'o' options JSON, 'p' priority (non-zero integer),
--   'w' when: '+<ms>' after a delay or '@<ms>' at an absolute time (ms since the epoch),
--   'x' time to live in ms: a job not started by then expires (see claim.lua).
--   Most jobs have none (E = 0), which keeps a bulk call small.
-- Returns: the 1-based positions of jobs whose id already existed (empty when all were
--   created). Those jobs are left untouched; the caller reports "already existed".
-- Errors: none of its own; the caller validates ids, sizes and priorities before calling.
-- @include common

local now = now_ms()
local existed = {}
local plain = {}  -- priority-0 ids, pushed together at the end (one LPUSH per 1,000 ids)
local created_any = false
local created_ids = {}
local i = 1
local position = 0

while i <= #ARGV do
  position = position + 1
  local id = ARGV[i]
  local key = KEYS[6] .. id
  local extras = tonumber(ARGV[i + 3])
  if redis.call('EXISTS', key) == 1 then
    existed[#existed + 1] = position
  else
    local priority = 0
    local due = 0
    local fields = {'n', ARGV[i + 1], 'a', ARGV[i + 2], 'ct', now}
    for e = i + 4, i + 2 + extras * 2, 2 do
      local name, value = ARGV[e], ARGV[e + 1]
      if name == 'p' then
        priority = tonumber(value)
      elseif name == 'w' then
        local amount = tonumber(string.sub(value, 2))
        if string.sub(value, 1, 1) == '+' then due = now + amount else due = amount end
        name = nil
      elseif name == 'x' then
        value = now + tonumber(value)
      end
      if name then
        fields[#fields + 1] = name; fields[#fields + 1] = value
      end
    end
    if due > now then
      fields[#fields + 1] = 's'; fields[#fields + 1] = 'delayed'
      fields[#fields + 1] = 'due'; fields[#fields + 1] = due
      redis.call('HSET', key, unpack(fields))
      redis.call('ZADD', KEYS[3], due, id)
    else
      fields[#fields + 1] = 's'; fields[#fields + 1] = 'waiting'
      redis.call('HSET', key, unpack(fields))
      if priority == 0 then
        plain[#plain + 1] = id
      else
        push_ready(KEYS[1], KEYS[2], KEYS[5], id, priority, false)
      end
    end
    created_any = true
    if #created_ids < 100 then created_ids[#created_ids + 1] = id end
  end
  i = i + 4 + extras * 2
end

for start = 1, #plain, 1000 do
  redis.call('LPUSH', KEYS[1], unpack(plain, start, math.min(start + 999, #plain)))
end
if created_any then
  wake(KEYS[4])
  -- One event per call: a bulk enqueue lists its first 100 ids and says how many it made.
  emit(KEYS[7], 'enqueued', 'ids', table.concat(created_ids, ','), 'count', position - #existed)
end
return existed

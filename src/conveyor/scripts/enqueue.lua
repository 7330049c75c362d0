-- enqueue: create one or many jobs in one call.
--
-- KEYS[1] waiting LIST     KEYS[2] prioritized ZSET   KEYS[3] delayed ZSET
-- KEYS[4] marker ZSET      KEYS[5] sequence counter   KEYS[6] job hash prefix
-- ARGV[1] number of jobs N, then N groups of 6:
--   id, task name, args JSON, kwargs JSON ('' if none), options JSON ('' if none), priority,
--   followed by one more group of N values `when`: '' now, '+<ms>' after a delay, '@<ms>' at a time.
-- Returns: an array of N integers, 1 where the job was created, 0 where a job with that
--   id already existed (it is left untouched; the caller reports "already existed").
-- Errors: none of its own; the caller validates ids, sizes and priorities before calling.
-- @include common

local n = tonumber(ARGV[1])
local now = now_ms()
local created = {}
local woke = false
local when_base = 1 + n * 6

for i = 0, n - 1 do
  local base = 2 + i * 6
  local id = ARGV[base]
  local key = KEYS[6] .. id
  if redis.call('EXISTS', key) == 1 then
    created[i + 1] = 0
  else
    local priority = tonumber(ARGV[base + 5])
    local fields = {'n', ARGV[base + 1], 'a', ARGV[base + 2], 'ct', now}
    if ARGV[base + 3] ~= '' then
      fields[#fields + 1] = 'k'; fields[#fields + 1] = ARGV[base + 3]
    end
    if ARGV[base + 4] ~= '' then
      fields[#fields + 1] = 'o'; fields[#fields + 1] = ARGV[base + 4]
    end
    if priority ~= 0 then
      fields[#fields + 1] = 'p'; fields[#fields + 1] = priority
    end
    local when = ARGV[when_base + i + 1]
    local due = 0
    if when ~= '' then
      local kind = string.sub(when, 1, 1)
      local value = tonumber(string.sub(when, 2))
      if kind == '+' then due = now + value else due = value end
    end
    if due > now then
      fields[#fields + 1] = 's'; fields[#fields + 1] = 'delayed'
      fields[#fields + 1] = 'due'; fields[#fields + 1] = due
      redis.call('HSET', key, unpack(fields))
      redis.call('ZADD', KEYS[3], due, id)
    else
      fields[#fields + 1] = 's'; fields[#fields + 1] = 'waiting'
      redis.call('HSET', key, unpack(fields))
      push_ready(KEYS[1], KEYS[2], KEYS[5], id, priority, false)
    end
    woke = true
    created[i + 1] = 1
  end
end

if woke then
  wake(KEYS[4])
end
return created

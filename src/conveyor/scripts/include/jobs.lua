-- Creating a job, shared by enqueue.lua and schedule.lua. Needs include common first.
--
-- ARGV-style input: id, task name, args JSON, then `extras` name/value pairs read from
-- `source` starting at `at` ('k' kwargs, 'o' options, 'p' priority, 'w' when, 'x' ttl ms).
-- q: {waiting=, prioritized=, delayed=, sequence=, prefix=} key names.
-- Returns: nil when a job with this id exists (nothing written); 'plain' when the job is
-- waiting with priority 0 and the caller must LPUSH its id (callers batch those pushes);
-- 'placed' when it was put in the prioritized or delayed set already.
local function create_job(q, now, id, task, args, source, at, extras)
  local key = q.prefix .. id
  if redis.call('EXISTS', key) == 1 then
    return nil
  end
  local priority = 0
  local due = 0
  local fields = {'n', task, 'a', args, 'ct', now}
  for e = at, at + (extras - 1) * 2, 2 do
    local name, value = source[e], source[e + 1]
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
    redis.call('ZADD', q.delayed, due, id)
    return 'placed'
  end
  fields[#fields + 1] = 's'; fields[#fields + 1] = 'waiting'
  redis.call('HSET', key, unpack(fields))
  if priority == 0 then
    return 'plain'
  end
  push_ready(q.waiting, q.prioritized, q.sequence, id, priority, false)
  return 'placed'
end

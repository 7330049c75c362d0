-- Creating a job, shared by enqueue.lua and schedule.lua. Needs includes common and history first.
--
-- ARGV-style input: id, task name, args JSON, then `extras` name/value pairs read from
-- `source` starting at `at`: the enqueue fields of the legend atop common.lua.
-- q: the calling script's keys by name, as it bound them (without '_key'): {waiting=,
-- prioritized=, delayed=, cancelled=, sequence=, job_prefix=, dedup_prefix=, group_prefix=,
-- parents=, suspects=, history=, history_feed=}.

-- A job that a newer debounced one replaced is cancelled, and its hash kept this long for
-- inspection (one day) before it expires.
local REPLACED_KEPT_MS = 86400000

local function is_finished(state)
  return state == false or state == nil or state == 'completed' or state == 'failed' or state == 'cancelled'
end

-- Deduplication, before anything is written. `d` = {key=, window=ms (0: until the matched
-- job finishes), debounce=bool}. Returns 'duplicate', id when an existing job matches;
-- 'replace', id when a debounced job that has not started yet is to be replaced; nil.
local function match_duplicate(q, d)
  local other = redis.call('GET', d.key)
  if not other then
    return nil
  end
  local state = redis.call('HGET', q.job_prefix .. other, 's')
  if d.debounce then
    if state == 'delayed' or state == 'waiting' then
      return 'replace', other
    end
    return nil
  end
  -- Without a window, the match lasts while the job is unfinished; a key left behind by a
  -- finished, removed or expired job is simply taken over.
  if d.window == 0 and is_finished(state) then
    return nil
  end
  return 'duplicate', other
end

local function cancel_replaced(q, id, by_id, now)
  local key = q.job_prefix .. id
  if redis.call('ZREM', q.delayed, id) == 0 then
    unlist_waiting(q.waiting, q.prioritized, q.suspects, q.group_prefix, redis.call('HGET', key, 'g'), id)
  end
  local reason = cjson.encode({type = 'Cancelled', message = 'replaced by ' .. by_id .. ' (debounce)',
                               by = 'debounce', reason = 'debounced'})
  local feed = history_feed(q.history, q.history_feed)
  if feed then
    hand_off(feed, key, id, 'cancelled', now, reason)
    close_hand_off(feed)
  end
  redis.call('HSET', key, 's', 'cancelled', 'ft', now, 'e', reason)
  redis.call('ZADD', q.cancelled, now, id)
  redis.call('PEXPIRE', key, REPLACED_KEPT_MS)
end

-- Returns the outcome and, for 'duplicate' and for a debounce replacement, the other job's id:
--   nil: a job with this id exists (nothing written)     'duplicate', id: matched by dedup key
--   'plain' / 'placed' (+ replaced id or nil): created; 'plain' means the caller must LPUSH it.
-- After an enqueue: push the new option-less jobs (`plain`, ids) onto the waiting list,
-- wake blocked workers if the queue was empty, and record one event for the call.
-- `created` counts every job made (plain or not); `ids` holds the first 100 of them.
local function announce_waiting(waiting_key, marker_key, events_key, plain, created, ids)
  local length = 0
  for start = 1, #plain, CALL_CHUNK do
    length = redis.call('LPUSH', waiting_key, unpack(plain, start, math.min(start + CALL_CHUNK - 1, #plain)))
  end
  if created == 0 then
    return
  end
  -- Workers only block after finding the queue empty (or held back by a limit, which a
  -- finishing job lifts), so a list that already held jobs needs no wake-up call.
  if created > #plain or length == #plain then
    wake(marker_key)
  end
  -- One event per call: a bulk enqueue lists its first 100 ids and says how many it made.
  if created == 1 then
    emit(events_key, 'enqueued', 'id', ids[1])
  elseif #ids > 100 then
    emit(events_key, 'enqueued', 'ids', table.concat(ids, ',', 1, 100), 'count', created)
  else
    emit(events_key, 'enqueued', 'ids', table.concat(ids, ','), 'count', created)
  end
end

-- What an enqueue reports for an id that already has a job: 'identical' when that job has
-- the same task and arguments -- for a generated id, this very enqueue run once already,
-- re-sent by a retry below the client after a lost reply --, else 'existed'.
local function existing_kind(key, task, args)
  local found = redis.call('HMGET', key, 'n', 'a')
  if found[1] == task and found[2] == args then
    return 'identical'
  end
  return 'existed'
end

local function create_job(q, now, id, task, args, source, at, extras)
  local key = q.job_prefix .. id
  if redis.call('EXISTS', key) == 1 then
    return nil
  end
  local priority = 0
  local due = 0
  local dedup = nil
  local group = nil
  local pending = 0
  local fields = {'n', task, 'a', args, 'ct', now}
  for e = at, at + (extras - 1) * 2, 2 do
    local name, value = source[e], source[e + 1]
    if name == 'p' then
      priority = tonumber(value)
    elseif name == 'w' then
      local amount = tonumber(string.sub(value, 2))
      if string.sub(value, 1, 1) == '+' then due = now + amount else due = amount end
      name = nil
    elseif name == 'g' then
      group = value
    elseif name == 'dp' then
      pending = tonumber(value)
    elseif name == 'x' then
      value = now + tonumber(value)
    elseif name == 'du' then
      dedup = dedup or {window = 0, debounce = false}
      dedup.key = q.dedup_prefix .. value
    elseif name == 'dw' then
      dedup = dedup or {window = 0, debounce = false}
      dedup.window = tonumber(value)
      name = nil
    elseif name == 'db' then
      dedup = dedup or {window = 0, debounce = false}
      dedup.debounce = true
      name = nil
    end
    if name then
      fields[#fields + 1] = name; fields[#fields + 1] = value
    end
  end
  local replaced = nil
  if dedup then
    local verdict, other = match_duplicate(q, dedup)
    if verdict == 'duplicate' then
      return 'duplicate', other
    end
    if verdict == 'replace' then
      cancel_replaced(q, other, id, now)
      replaced = other
    end
    if dedup.window > 0 then
      redis.call('SET', dedup.key, id, 'PX', dedup.window)
    else
      redis.call('SET', dedup.key, id)
    end
  end
  if pending > 0 then
    fields[#fields + 1] = 's'; fields[#fields + 1] = 'waiting_children'
    redis.call('HSET', key, unpack(fields))
    redis.call('ZADD', q.parents, now, id)
    return 'placed', replaced
  end
  if due > now then
    fields[#fields + 1] = 's'; fields[#fields + 1] = 'delayed'
    fields[#fields + 1] = 'due'; fields[#fields + 1] = due
    redis.call('HSET', key, unpack(fields))
    redis.call('ZADD', q.delayed, due, id)
    return 'placed', replaced
  end
  fields[#fields + 1] = 's'; fields[#fields + 1] = 'waiting'
  redis.call('HSET', key, unpack(fields))
  if priority == 0 and not group then
    return 'plain', replaced
  end
  push_ready(q.waiting, q.prioritized, q.sequence, id, priority, false, group, q.group_prefix)
  return 'placed', replaced
end

-- The history hand-off: how a finished job leaves Redis toward the history store (issue 15).
-- Needs include common first.
--
-- When a queue's history is on (its history_feed HASH has a field `max`), every script that
-- ends a job -- complete, fail, sweep, cancel, claim (expired, bad payload), child (a parent
-- failed with its child), enqueue (a debounced job replaced), remove and purge (a job removed
-- before it finished) -- adds one entry to the queue's history STREAM in the same atomic
-- step: a copy of the job's fields as they are at that moment (one entry per call, holding
-- every job the call ended). The archivers (a consumer
-- group, see conveyor.history.archiver) store the entry in the database and only then
-- delete it. So the retention of finished jobs in Redis (which may delete a job's hash at
-- once) never removes data the store has not received, and the capped events stream is not
-- relied on for anything.
--
-- history_feed HASH: max (jobs the hand-off may hold; off when absent), held (jobs it holds
-- now: added here, taken off by archived.lua), dropped (jobs refused because the hand-off
-- was full: counted, never silent -- jobs keep finishing while the database is away, and the
-- operator sees the loss in metrics and logs).
--
-- Earlier attempts of a job leave a line each in its field `al` (attempt log) as they end
-- (retried after a failure, lost with their worker), only while history is on: one JSON
-- object per line, {n attempt, o outcome, w worker, s started ms, f ended ms, t error type,
-- m error message}. The last attempt is told by the job's own fields.

-- A job's fields are copied as they are, as one JSON value per job (cjson encodes in C: a
-- value per job costs the XADD far less than its 20-odd fields would). Only a hash larger
-- than this many items (a chord's parent, with its children's outcomes) is sifted first.
local HISTORY_SIFT_ABOVE = 48

-- What a large hash leaves out: bookkeeping and the flow's state, which can be large.
local HISTORY_SKIPPED = {tk = true, wt = true, ak = true, dp = true, ch = true, co = true, pg = true, ab = true}

-- An entry holds the jobs of one script call (a batch of acknowledgements is one entry:
-- one XADD, not one per job), at most this many (unpack's stack limit, see CALL_CHUNK).
local HISTORY_ENTRY_JOBS = 1000

-- The queue's hand-off, or nil when its history is off. `room`: how many more jobs it takes
-- before it is full. Jobs handed off are kept in `fields` and written by flush_hand_off.
local function history_feed(history_key, feed_key)
  local f = redis.call('HMGET', feed_key, 'max', 'held')
  if not f[1] then
    return nil
  end
  return {key = history_key, feed = feed_key, room = tonumber(f[1]) - tonumber(f[2] or 0),
          fields = {'jobs', 0}, jobs = 0, held = 0, dropped = 0}
end

-- Write what was handed off since the last flush: one entry, its job count first.
local function flush_hand_off(feed)
  if feed.jobs > 0 then
    feed.fields[2] = feed.jobs
    redis.call('XADD', feed.key, '*', unpack(feed.fields))
    feed.held = feed.held + feed.jobs
    feed.fields = {'jobs', 0}
    feed.jobs = 0
  end
end

-- Close the script's use of the hand-off: the last entry, and the counts.
local function close_hand_off(feed)
  flush_hand_off(feed)
  if feed.held > 0 then
    redis.call('HINCRBY', feed.feed, 'held', feed.held)
    feed.held = 0
  end
  if feed.dropped > 0 then
    redis.call('HINCRBY', feed.feed, 'dropped', feed.dropped)
    feed.dropped = 0
  end
end

-- Hand a job that ended to the history, from its fields `hash` (HGETALL, flat): `state` is
-- its final state (completed, failed, cancelled, expired, removed), `finished` when it
-- ended (ms), `payload` its result (completed) or error JSON, or false. In the entry, the
-- job is one field: its id, with [state, finished, payload, hash] as JSON.
local function hand_off_fields(feed, hash, id, state, finished, payload)
  if feed.room <= 0 then
    feed.dropped = feed.dropped + 1
    return
  end
  if feed.jobs >= HISTORY_ENTRY_JOBS then
    flush_hand_off(feed)
  end
  if #hash > HISTORY_SIFT_ABOVE then
    local kept = {}
    for i = 1, #hash, 2 do
      local name = hash[i]
      if not HISTORY_SKIPPED[name] and string.sub(name, 1, 2) ~= 'd:' then
        kept[#kept + 1] = name; kept[#kept + 1] = hash[i + 1]
      end
    end
    hash = kept
  end
  local n = #feed.fields
  feed.fields[n + 1] = id
  feed.fields[n + 2] = cjson.encode({state, finished, payload, hash})
  feed.jobs = feed.jobs + 1
  feed.room = feed.room - 1
end

-- As hand_off_fields, reading the job's fields first. Call it before the hash may be deleted.
local function hand_off(feed, job_key, id, state, finished, payload)
  if feed.room <= 0 then
    feed.dropped = feed.dropped + 1
    return
  end
  hand_off_fields(feed, redis.call('HGETALL', job_key), id, state, finished, payload)
end

-- The values of `names` (a table name -> position) in a flat HGETALL reply, as HMGET gives
-- them (false where missing): a script that hands a job off reads it whole once.
local function pick_fields(hash, names, count)
  local values = {}
  for i = 1, count do values[i] = false end
  for i = 1, #hash, 2 do
    local at = names[hash[i]]
    if at then values[at] = hash[i + 1] end
  end
  return values
end

-- An attempt's error message is cut to this many bytes in the attempt log.
local ATTEMPT_MESSAGE_CAP = 1000

-- Note in the job's attempt log how its current attempt ended (`outcome`: retried, lost),
-- with the error JSON when there is one.
local function log_attempt(job_key, outcome, now, failure)
  local f = redis.call('HMGET', job_key, 'at', 'w', 'st', 'al')
  local line = {n = tonumber(f[1] or 0), o = outcome, w = f[2] or nil, s = tonumber(f[3] or 0), f = now}
  if failure then
    -- pcall: an error JSON is written by workers; a malformed one must not fail the script.
    local ok, err = pcall(cjson.decode, failure)
    if ok and type(err) == 'table' then
      line.t = type(err.type) == 'string' and err.type or nil
      line.m = type(err.message) == 'string' and string.sub(err.message, 1, ATTEMPT_MESSAGE_CAP) or nil
    end
  end
  local text = cjson.encode(line)
  if f[4] then
    text = f[4] .. '\n' .. text
  end
  redis.call('HSET', job_key, 'al', text)
end

-- The history hand-off: how a finished job leaves Redis toward the history store (issue 15).
-- Needs include common first.
--
-- When a queue's history is on (its history_feed HASH has a field `max`), every script that
-- ends a job -- complete, fail, sweep, cancel, claim (expired, bad payload), child (a parent
-- failed with its child), enqueue (a debounced job replaced), remove and purge (a job removed
-- before it finished) -- adds one entry to the queue's history STREAM in the same atomic
-- step: a copy of the job's fields as they are at that moment. The archivers (a consumer
-- group, see conveyor.history.archiver) store the entry in the database and only then
-- delete it. So the retention of finished jobs in Redis (which may delete a job's hash at
-- once) never removes data the store has not received, and the capped events stream is not
-- relied on for anything.
--
-- history_feed HASH: max (entries the hand-off may hold; off when absent), dropped (entries
-- refused because the hand-off was full: counted, never silent -- jobs keep finishing while
-- the database is away, and the operator sees the loss in metrics and logs).
--
-- Earlier attempts of a job leave a line each in its field `al` (attempt log) as they end
-- (retried after a failure, lost with their worker), only while history is on: one JSON
-- object per line, {n attempt, o outcome, w worker, s started ms, f ended ms, t error type,
-- m error message}. The last attempt is told by the job's own fields.

-- The job fields a hand-off entry copies (see the legend in common.lua); s, ft and r or e
-- are given by the caller, as they are at the end.
local HISTORY_FIELDS = {'n', 'a', 'k', 'o', 'p', 'ct', 'due', 'at', 'cr', 'st', 'w', 'g', 'pa', 'x', 'df', 'al', 'sc'}

-- An attempt's error message is cut to this many bytes in the attempt log.
local ATTEMPT_MESSAGE_CAP = 1000

-- The queue's hand-off, or nil when its history is off. `room`: how many entries it takes
-- before it is full.
local function history_feed(history_key, feed_key)
  local max = redis.call('HGET', feed_key, 'max')
  if not max then
    return nil
  end
  return {key = history_key, feed = feed_key, room = tonumber(max) - redis.call('XLEN', history_key)}
end

-- Hand a job that ended to the history: state is its final state (completed, failed,
-- cancelled, expired, removed); `...` are field, value pairs that override the job's own
-- (ft and r or e). Call it before the job's hash may be deleted.
local function hand_off(feed, job_key, id, state, ...)
  if feed.room <= 0 then
    redis.call('HINCRBY', feed.feed, 'dropped', 1)
    return
  end
  local values = redis.call('HMGET', job_key, unpack(HISTORY_FIELDS))
  local entry = {'id', id, 's', state, ...}
  for i = 1, #HISTORY_FIELDS do
    if values[i] then
      entry[#entry + 1] = HISTORY_FIELDS[i]
      entry[#entry + 1] = values[i]
    end
  end
  redis.call('XADD', feed.key, '*', unpack(entry))
  feed.room = feed.room - 1
end

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

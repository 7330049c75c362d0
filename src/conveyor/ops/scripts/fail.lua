-- fail: record failed attempts (a batch from one worker): schedule a retry or dead-letter.
--
-- KEYS[1] active_key ZSET   KEYS[2] waiting_key LIST   KEYS[3] prioritized_key ZSET
-- KEYS[4] delayed_key ZSET   KEYS[5] failed_key ZSET   KEYS[6] marker_key ZSET
-- KEYS[7] sequence_key counter   KEYS[8] job_prefix of job hashes   KEYS[9] done_prefix of done lists
-- KEYS[10] cancelled_key ZSET   KEYS[11] events_key STREAM   KEYS[12] group_prefix
-- KEYS[13] outbox_key LIST (notes for parents in flows)   KEYS[14] suspects_key ZSET (a suspect
--   retried at once goes back there; see sweep.lua)   KEYS[15] history_key STREAM
-- KEYS[16] history_feed_key HASH (the history hand-off, see include/history.lua)
-- KEYS[17] metrics_prefix of the queue's figures (see include/metrics.lua)   KEYS[18] settings_key HASH
-- ARGV[1] keep_count for failed and cancelled jobs (-1 unlimited)   ARGV[2] keep_ms (-1 forever)
-- ARGV[3] times: "slot increment ..." pairs, the wait and run times the worker measured since
--   its last acknowledgement of the queue, for the queue's figures (include/metrics.lua)
-- then, from first_failure (4) on, groups of 5: id, fencing token, error JSON, retry delay ms,
--   deferral cap.
--   delay >= 0: retry after it; -1: dead-letter (failed); -2: cancelled (aborted while running;
--   the error recorded is the one cancel.lua stored with the request, when there is one).
--   deferral cap -1: an ordinary outcome. n >= 0: the job asked to come back later (RetryAfter,
--   e.g. an HTTP 429): the attempt does not count, but the deferral does, and the job is
--   dead-lettered (reason max_deferrals) when it asks more than n times in its life, so that
--   no job is deferred forever.
-- Returns: one integer per job: 1 retrying, 2 dead-lettered, 3 cancelled, 4 recorded already (by
--   an earlier try of this batch that reached Redis, though its reply was lost with the
--   connection), 0 refused (stale token); 12 and 13 for 2 and 3 when a note for the job's
--   parent (flows) was left in the outbox.
-- Errors: none.
-- @include common
-- @include history
-- @include metrics

local active_key = KEYS[1]
local waiting_key = KEYS[2]
local prioritized_key = KEYS[3]
local delayed_key = KEYS[4]
local failed_key = KEYS[5]
local marker_key = KEYS[6]
local sequence_key = KEYS[7]
local job_prefix = KEYS[8]
local done_prefix = KEYS[9]
local cancelled_key = KEYS[10]
local events_key = KEYS[11]
local group_prefix = KEYS[12]
local outbox_key = KEYS[13]
local suspects_key = KEYS[14]
local history_key = KEYS[15]
local history_feed_key = KEYS[16]
local metrics_prefix = KEYS[17]
local settings_key = KEYS[18]
local keep_count = tonumber(ARGV[1])
local keep_ms = tonumber(ARGV[2])
local times = ARGV[3]
local first_failure = 4

local now = now_ms()
local feed = history_feed(history_key, history_feed_key)
local figures = metrics_new(metrics_prefix, settings_key)
metrics_given(figures, times)
local out = {}
local woke = false

-- A job that ends here (dead-lettered or cancelled): its waiters and its parent learn how
-- (``mark`` f or x before the error), and its reply is ``code``, or code + 10 when a note for
-- its parent was left in the outbox. ``f`` is the job's HMGET below.
local function finish(id, key, token, f, state, set_key, mark, err, code)
  notify_waiters(done_prefix, id, f[3], mark .. err)
  if feed then hand_off(feed, key, id, state, now, err) end
  redis.call('HSET', key, 's', state, 'ft', now, 'e', err, 'ak', token)
  keep_finished(set_key, key, id, keep_count, keep_ms, now)
  emit(events_key, state, 'id', id)
  metrics_count(figures, state, 1)
  out[#out + 1] = code
  if f[6] then
    tell_parent(outbox_key, f[6], id, mark, err, now)
    out[#out] = code + 10
  end
end

for i = first_failure, #ARGV, 5 do
  local id, token, failure, delay, cap = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local key = job_prefix .. id
  local f = redis.call('HMGET', key, 'tk', 's', 'wt', 'p', 'g', 'pa', 'ab', 'su', 'ak')
  if f[1] == token and f[2] == 'active' then
    delay = tonumber(delay)
    cap = tonumber(cap)
    redis.call('ZREM', active_key, id)
    if f[5] then leave_group(group_prefix, f[5]) end
    if cap >= 0 then
      local deferrals = redis.call('HINCRBY', key, 'df', 1)
      if deferrals <= cap then
        redis.call('HINCRBY', key, 'at', -1)
      elseif delay >= 0 then
        -- pcall: a malformed error from a caller must not fail the whole batch.
        local ok, asked = pcall(cjson.decode, failure)
        local why = ok and type(asked) == 'table' and asked.message or failure
        failure = cjson.encode({
          type = 'TooManyDeferrals',
          message = 'deferred ' .. (deferrals - 1) .. ' times (max_deferrals ' .. cap
            .. '); it asked again: ' .. tostring(why),
          reason = 'max_deferrals',
        })
        delay = -1
      end
    end
    if delay == -2 then
      -- Who cancelled it and why, as given to cancel (cancel.lua), over the worker's account.
      finish(id, key, token, f, 'cancelled', cancelled_key, 'x', f[7] or failure, 3)
    elseif delay < 0 then
      finish(id, key, token, f, 'failed', failed_key, 'f', failure, 2)
    else
      -- A retry. A deferral (cap >= 0) was no attempt (its count was given back above).
      if feed and cap < 0 then log_attempt(key, 'retried', now, failure) end
      if delay == 0 then
        redis.call('HSET', key, 's', 'waiting', 'e', failure, 'ak', token, 'rd', now)
        if f[8] then
          redis.call('ZADD', suspects_key, now, id)
        else
          push_ready(waiting_key, prioritized_key, sequence_key, id, tonumber(f[4] or 0), false, f[5], group_prefix)
        end
        emit(events_key, 'retrying', 'id', id, 'delay', 0)
      else
        redis.call('HSET', key, 's', 'delayed', 'due', now + delay, 'e', failure, 'ak', token)
        redis.call('ZADD', delayed_key, now + delay, id)
        emit(events_key, 'retrying', 'id', id, 'delay', delay)
      end
      if cap < 0 then metrics_count(figures, 'retried', 1) end  -- a deferral is no attempt
      woke = true
      out[#out + 1] = 1
    end
  elseif f[9] == token then
    -- ak: the attempt whose outcome was recorded last (the sweep, a cancel or a retry by hand
    -- never set it), so this is the same outcome sent again.
    out[#out + 1] = ALREADY_RECORDED
  else
    out[#out + 1] = 0
  end
end

if feed then close_hand_off(feed) end
metrics_flush(figures, now)
-- A retry is new work, and freed slots may let a worker that a concurrency limit kept
-- waiting claim again.
if woke or redis.call('LLEN', waiting_key) > 0 or redis.call('ZCARD', prioritized_key) > 0
   or redis.call('ZCARD', group_prefix .. 'ring') > 0 then
  wake(marker_key)
end
trim_finished(failed_key, job_prefix, keep_count, keep_ms, now)
trim_finished(cancelled_key, job_prefix, keep_count, keep_ms, now)
return out

-- Shared helpers, included at the top of scripts that need them (see scripts/__init__.py).
--
-- The legend of job fields, the one place they are named (conveyor.job reads them;
-- conveyor.ops.encode writes what an enqueue sets).
-- Job hash fields: n task name, a args JSON, k kwargs JSON, o options JSON, p priority,
-- s state, ct created ms, due run-at ms, at attempts, cr crashes, tk fencing token,
-- st started ms, ft finished ms, w worker id, r result JSON, e error JSON, wt waiters,
-- pg progress JSON, ab abort request (reason JSON), x expires at ms, du dedup key,
-- g group key, su suspect (lost its worker too often to run beside other jobs: runs only
-- alone, see sweep.lua), df deferrals (RetryAfter) so far, ak token of the attempt whose
-- failure was recorded last (fail.lua: a retried acknowledgement is answered "recorded
-- already"), sc the schedule that enqueued it, al attempt log (while history is on, see
-- include/history.lua), rd ready again since ms (due after a delay, handed back, retried:
-- a job's wait counts from it, or from ct; see include/metrics.lua); flows: pa parent reference, dp children pending, ch children references
-- (JSON), fp failed-child policy, pr pass results, co children's outcomes, d:<child> one outcome.
-- Enqueue fields: name/value pairs after a job's id, task name and args JSON, read by
-- create_job (jobs.lua); most jobs have none.
--   k kwargs JSON, o options JSON, p priority (non-zero integer): stored as above;
--   w when: '+<ms>' after a delay or '@<ms>' at an absolute time (ms since the epoch),
--     stored as due (the hash's w is the worker id);
--   x time to live in ms: a job not started by then expires (see claim.lua); stored as the
--     time it expires at;
--   du deduplication key (stored), dw its window in ms (0: while the matched job is
--     unfinished), db 1 to debounce: a later enqueue within the window replaces a job that
--     has not started (dw and db are not stored);
--   g group key (stored): the job waits in its group's line, served round-robin with other
--     groups and held to the per-group limits (see claim.lua);
--   flows, stored: pa "<queue> <id>" of the parent, and for a parent dp its number of
--     children (it waits in the parents set until child.lua has heard of each), ch their
--     references as a JSON array, fp 'ignore' to run even if a child failed, pr 1 to pass
--     results (the one result of a single child), 2 to pass them always as a list (chord).
--
-- Helpers take every key they touch as a parameter and never read KEYS or ARGV: each
-- script binds those to names at its top, and passes the names on.

-- Room for 2^32 sequence numbers in each priority level of a score (see priority_score).
local SEQUENCES_PER_PRIORITY = 4294967296

-- 2^20: priorities stay within +-MAX_PRIORITY (the client checks it, conveyor.task), so
-- that -priority * SEQUENCES_PER_PRIORITY + sequence is an exact integer in a double
-- (below 2^53). Priority aging (claim.lua) lifts no job past it either.
local MAX_PRIORITY = 1048576

-- Items per redis.call when a batch is spread over several calls: unpack puts every item
-- on Lua's C stack, which holds about 8,000 (LUAI_MAXCSTACK), so unpacking a whole batch
-- of 100,000 ids would fail.
local CALL_CHUNK = 1000

-- The event stream keeps about this many entries (see emit).
local EVENTS_KEPT = 10000

-- A job's done list lives this long after the job ended: long enough for each registered
-- waiter to pop its entry, and the entries of waiters that gave up do not stay behind.
local DONE_LIST_TTL_MS = 60000

-- complete.lua's and fail.lua's answer to an outcome they had recorded already: the same
-- attempt's acknowledgement, sent again after a connection broke before its reply came.
local ALREADY_RECORDED = 4

-- Server time in ms. Every worker reads the same clock, so leases and delays do not
-- depend on the clocks of the machines the workers run on.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Priority jobs sort by (-priority, sequence): ZPOPMIN then yields the highest priority
-- first and FIFO within one priority. 2^32 sequences per priority level; priorities are
-- limited to +-2^20 so the score stays an exact integer in a double.
local function priority_score(priority, seq_key)
  local seq = redis.call('INCR', seq_key) % SEQUENCES_PER_PRIORITY
  return -priority * SEQUENCES_PER_PRIORITY + seq
end

-- Grouped jobs (a job with a group key: a tenant, a customer, an API host) do not wait in
-- the queue's own list: each group has its own ZSET of waiting jobs, ordered like the
-- prioritized set, and the ring ZSET lists the groups that may run now, scored by turn, so
-- claim serves them round-robin. Keys under the group prefix G:
--   G..'ring'     ZSET  group -> turn (lowest is served next)
--   G..'active'   HASH  group -> jobs of the group running now
--   G..'limited'  ZSET  group -> ms at which its rate window reopens (out of the ring till then)
--   G..'known'    SET   groups that have (or recently had) waiting jobs
--   G..'turn'     counter for turns and FIFO order inside a group
--   G..'q:'..g    ZSET  the group's waiting jobs      G..'r:'..g  jobs started in its window
-- A group at its concurrency limit leaves the ring and comes back when one of its jobs
-- leaves the active state (leave_group).
local function push_grouped(gprefix, group, id, priority)
  local turn = redis.call('INCR', gprefix .. 'turn')
  redis.call('ZADD', gprefix .. 'q:' .. group, -priority * SEQUENCES_PER_PRIORITY + turn % SEQUENCES_PER_PRIORITY, id)
  redis.call('SADD', gprefix .. 'known', group)
  redis.call('ZADD', gprefix .. 'ring', 'NX', turn, group)
end

-- Give a group that still has waiting jobs its place in the ring again (at the back).
local function ring_again(gprefix, group)
  if redis.call('EXISTS', gprefix .. 'q:' .. group) == 1 then
    redis.call('ZADD', gprefix .. 'ring', 'NX', redis.call('INCR', gprefix .. 'turn'), group)
  else
    redis.call('SREM', gprefix .. 'known', group)
  end
end

-- A job of `group` left the active state (finished, failed, handed back, lost).
local function leave_group(gprefix, group)
  if redis.call('HINCRBY', gprefix .. 'active', group, -1) <= 0 then
    redis.call('HDEL', gprefix .. 'active', group)
  end
  ring_again(gprefix, group)
end

-- Take a waiting job out of line (cancel, remove, debounce replacement). A suspect (see
-- sweep.lua) waits in the suspects line whatever its group or priority.
local function unlist_waiting(waiting_key, prioritized_key, suspects_key, gprefix, group, id)
  if group then
    if redis.call('ZREM', gprefix .. 'q:' .. group, id) == 1 then return end
  elseif redis.call('LREM', waiting_key, 1, id) == 1 or redis.call('ZREM', prioritized_key, id) == 1 then
    return
  end
  redis.call('ZREM', suspects_key, id)
end

-- Number of grouped jobs waiting, over all groups.
local function grouped_waiting(gprefix)
  local total = 0
  local groups = redis.call('SMEMBERS', gprefix .. 'known')
  for i = 1, #groups do
    total = total + redis.call('ZCARD', gprefix .. 'q:' .. groups[i])
  end
  return total
end

-- Jobs per state of a queue, in one snapshot: {waiting (suspects included: to users they
-- are waiting jobs), delayed, active, completed, failed, cancelled, waiting_children}.
local function state_counts(waiting_key, prioritized_key, delayed_key, active_key, completed_key, failed_key,
                            cancelled_key, gprefix, parents_key, suspects_key)
  return {
    redis.call('LLEN', waiting_key) + redis.call('ZCARD', prioritized_key) + grouped_waiting(gprefix)
      + redis.call('ZCARD', suspects_key),
    redis.call('ZCARD', delayed_key),
    redis.call('ZCARD', active_key),
    redis.call('ZCARD', completed_key),
    redis.call('ZCARD', failed_key),
    redis.call('ZCARD', cancelled_key),
    redis.call('ZCARD', parents_key),
  }
end

-- Put a job id where workers look for ready work. front=true puts it first in line
-- (a job handed back by a crashed or stopping worker goes before newer jobs). A job with a
-- group goes to its group's line instead (see push_grouped).
local function push_ready(waiting_key, prioritized_key, seq_key, id, priority, front, group, gprefix)
  if group then
    push_grouped(gprefix, group, id, priority)
  elseif priority == 0 then
    if front then
      redis.call('RPUSH', waiting_key, id)
    else
      redis.call('LPUSH', waiting_key, id)
    end
  else
    redis.call('ZADD', prioritized_key, priority_score(priority, seq_key), id)
  end
end

-- A job that belongs to a flow (field 'pa': "<parent queue> <parent id>") finished: leave a
-- note in its queue's outbox. A worker delivers the note to the parent (child.lua), then
-- deletes it. The parent may live in another queue, so in another cluster slot, which this
-- script may not touch. kind: 'c' completed (payload: its result JSON), 'f' failed, 'x'
-- cancelled or removed (payload: its error JSON).
local function tell_parent(outbox_key, parent, id, kind, payload, now)
  redis.call('RPUSH', outbox_key, cjson.encode({id = id, pa = parent, k = kind, v = payload, t = now}))
end

-- Wake one worker blocked in BZPOPMIN on the marker. The marker holds at most one member,
-- so it never grows however many jobs arrive while nobody listens.
-- A worker reached this queue's leases (a heartbeat or a sweep): note when, in the lease
-- clock. If none had for longer than ``quiet_ms`` (half the caller's lease, while heartbeats
-- come every third of one), Redis was down or out of every worker's reach: the silence is
-- recorded (from, to). Leases that ran out in it ran out for want of a Redis, not of a
-- worker: sweep.lua does not re-deliver them until a lease's time after it, so that live
-- workers renew them first, whichever reaches the restarted Redis first -- a sweep or a
-- heartbeat. Returns the last silence recorded (from, to: ms, or nil) and true when it
-- just ended.
local function lease_contact(clock_key, now, quiet_ms)
  local c = redis.call('HMGET', clock_key, 'seen', 'from', 'to')
  local seen = tonumber(c[1])
  if seen and now - seen > quiet_ms then
    redis.call('HSET', clock_key, 'seen', now, 'from', seen, 'to', now)
    return seen, now, true
  end
  redis.call('HSET', clock_key, 'seen', now)
  return tonumber(c[2]), tonumber(c[3]), false
end

local function wake(marker_key)
  redis.call('ZADD', marker_key, 0, 'w')
end

-- Append a lifecycle event to the queue's stream, capped (approximately) at 10,000
-- entries. Events carry ids and small fields, never results or arguments: a stream full of
-- results is how a queue runs out of memory. Batch events list their ids comma-separated.
local function emit(events_key, name, ...)
  redis.call('XADD', events_key, 'MAXLEN', '~', EVENTS_KEPT, '*', 'e', name, ...)
end

-- Tell clients blocked in result() that the job ended: one entry per registered waiter.
local function notify_waiters(done_prefix, id, waiters, payload)
  local count = tonumber(waiters or 0) or 0
  if count > 0 then
    local done_key = done_prefix .. id
    for _ = 1, count do
      redis.call('RPUSH', done_key, payload)
    end
    redis.call('PEXPIRE', done_key, DONE_LIST_TTL_MS)
  end
end

-- Call `command key ...` with the arguments in `items`, at most 1,000 per call: one call
-- per batch instead of one per job is most of what a batch saves in the server, since each
-- redis.call from Lua costs about as much as the command itself.
local function call_chunked(command, key, items)
  for start = 1, #items, CALL_CHUNK do
    redis.call(command, key, unpack(items, start, math.min(start + CALL_CHUNK - 1, #items)))
  end
end

-- Retention of finished jobs: at most keep_count ids (oldest dropped first, their hashes
-- deleted) and nothing older than keep_ms (hashes expire by their own TTL).
local function trim_finished(set_key, job_prefix, keep_count, keep_ms, now)
  if keep_ms > 0 then
    redis.call('ZREMRANGEBYSCORE', set_key, '-inf', now - keep_ms)
  end
  if keep_count >= 0 then
    local excess = redis.call('ZCARD', set_key) - keep_count
    if excess > 0 then
      local old = redis.call('ZRANGE', set_key, 0, excess - 1)
      for i = 1, #old do
        old[i] = job_prefix .. old[i]
      end
      for start = 1, #old, CALL_CHUNK do
        redis.call('DEL', unpack(old, start, math.min(start + CALL_CHUNK - 1, #old)))
      end
      redis.call('ZREMRANGEBYRANK', set_key, 0, excess - 1)
    end
  end
end

-- Store a finished job: in the set, or deleted at once when nothing is to be kept.
local function keep_finished(set_key, job_key, id, keep_count, keep_ms, now)
  if keep_count == 0 or keep_ms == 0 then
    redis.call('DEL', job_key)
    return
  end
  redis.call('ZADD', set_key, now, id)
  if keep_ms > 0 then
    redis.call('PEXPIRE', job_key, keep_ms)
  end
end

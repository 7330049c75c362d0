-- claim: promote due delayed jobs, then hand up to N ready jobs to one worker, within the
-- queue's limits (pause, concurrency across all workers, rate per time window) and the
-- limits of each group (at most K running, at most N started per window).
--
-- Order: grouped jobs are served round-robin across groups, one job per group per turn,
-- so a group with 100,000 waiting jobs cannot starve a group with 10. Jobs without a group
-- form one more line (highest priority first, FIFO within a priority); when both kinds
-- wait, a claim takes half of its jobs from each.
--
-- Suspects (jobs that lost their worker too often, see sweep.lua) are handed out only to a
-- worker that holds no job at all (idle), and alone: that claim returns just the
-- suspect, and the worker claims nothing more until it holds nothing again. So a suspect
-- that kills its worker takes no other job with it. So that suspects cannot starve behind
-- workers that are never idle (long jobs, a steady stream): once the oldest suspect has
-- waited room_ms, the next busy worker to claim is told to make room instead (it gets
-- no jobs, lets its jobs finish, then claims as an idle worker; it goes back to claiming
-- at once if the suspects line empties meanwhile); one more busy worker is told so every
-- room_ms for as long as the suspect waits. Suspects go before other jobs,
-- oldest first, whatever their priority; a grouped suspect still keeps its group's limits.
-- Without suspects this costs one ZCARD.
--
-- KEYS[1] waiting_key LIST   KEYS[2] prioritized_key ZSET   KEYS[3] delayed_key ZSET
-- KEYS[4] active_key ZSET    KEYS[5] marker_key ZSET        KEYS[6] sequence_key counter
-- KEYS[7] job_prefix of job hashes   KEYS[8] settings_key HASH of the queue (paused,
--   concurrency, rate_max, rate_ms, group_concurrency, group_rate_max, group_rate_ms,
--   aging_ms, aged_at)
-- KEYS[9] rate_key window counter   KEYS[10] failed_key ZSET   KEYS[11] done_prefix of done lists
-- KEYS[12] events_key STREAM   KEYS[13] group_prefix (see include/common.lua)
-- KEYS[14] outbox_key LIST (notes for parents in flows)   KEYS[15] suspects_key ZSET
-- KEYS[16] history_key STREAM   KEYS[17] history_feed_key HASH (the history hand-off, see
--   include/history.lua: for jobs that expired or had no task name)
-- KEYS[18] metrics_prefix of the queue's figures (see include/metrics.lua)
-- ARGV[1] max_jobs N   ARGV[2] lease_ms   ARGV[3] worker_id
-- ARGV[4] promote_limit: max delayed jobs to promote
-- ARGV[5] failed_keep_count, ARGV[6] failed_keep_ms: retention of failed jobs (for jobs that expired)
-- ARGV[7] idle: 1 when the worker holds no job (running or not yet acknowledged), else 0
-- ARGV[8] room_ms: how long a suspect waits for an idle worker before busy workers are told
--   to make room
-- Returns: {wait_ms, alone, now, id1, token1, attempts1, name1, args1, kwargs1, options1, children1,
--   ready1, id2, ...}
--   alone: 1 when the worker must claim nothing more until it holds no job (it was handed
--   a suspect, or told to make room for one), else 0.
--   children: for the parent of a flow, its children's outcomes (JSON, see child.lua), or ''.
--   now: the time of the claim (ms); ready: when the job last became ready to run (enqueued,
--   due, or handed back; ms): the worker counts its wait from them (see include/metrics.lua).
--   wait_ms: ms until something the worker waits for changes by itself (the earliest
--   delayed job is due, the rate window resets), or -1. The worker blocks on the marker
--   for at most that long. Each claimed job gets a lease deadline (its score in active)
--   and a fresh fencing token. Jobs whose time to live ran out before they started are
--   moved to failed with the reason "expired" instead of being handed out; a job hash
--   without a task name (not written by Conveyor) with the reason "bad_payload".
-- Errors: none.
-- @include common
-- @include history
-- @include metrics

local waiting_key = KEYS[1]
local prioritized_key = KEYS[2]
local delayed_key = KEYS[3]
local active_key = KEYS[4]
local marker_key = KEYS[5]
local sequence_key = KEYS[6]
local job_prefix = KEYS[7]
local settings_key = KEYS[8]
local rate_key = KEYS[9]
local failed_key = KEYS[10]
local done_prefix = KEYS[11]
local events_key = KEYS[12]
local group_prefix = KEYS[13]
local outbox_key = KEYS[14]
local suspects_key = KEYS[15]
local history_key = KEYS[16]
local history_feed_key = KEYS[17]
local metrics_prefix = KEYS[18]
local max_jobs = tonumber(ARGV[1])
local lease_ms = tonumber(ARGV[2])
local worker_id = ARGV[3]
local promote_limit = tonumber(ARGV[4])
local failed_keep_count = tonumber(ARGV[5])
local failed_keep_ms = tonumber(ARGV[6])
local idle = ARGV[7] == '1'
local room_ms = tonumber(ARGV[8])

local now = now_ms()
local wait_ms = -1

local function wait_at_most(ms)
  if wait_ms < 0 or ms < wait_ms then wait_ms = ms end
end

-- 1. Promote delayed jobs that are due, oldest due first. Each is ready since it was due (rd).
local due_at = redis.call('ZRANGEBYSCORE', delayed_key, '-inf', now, 'WITHSCORES', 'LIMIT', 0, promote_limit)
local due = {}
for i = 1, #due_at, 2 do due[#due + 1] = due_at[i] end
if #due > 0 then
  redis.call('ZREMRANGEBYRANK', delayed_key, 0, #due - 1)
  for i = 1, #due do
    local key = job_prefix .. due[i]
    local f = redis.call('HMGET', key, 'p', 'g', 'su')
    redis.call('HSET', key, 's', 'waiting', 'rd', due_at[2 * i])
    if f[3] then
      redis.call('ZADD', suspects_key, now, due[i])
    else
      push_ready(waiting_key, prioritized_key, sequence_key, due[i], tonumber(f[1] or 0), false, f[2], group_prefix)
    end
  end
end

-- 2. The queue's own limits shrink N. Without settings this costs one HMGET.
local settings = redis.call('HMGET', settings_key, 'paused', 'concurrency', 'rate_max', 'rate_ms',
                           'group_concurrency', 'group_rate_max', 'group_rate_ms', 'aging_ms', 'aged_at')
if settings[1] then
  max_jobs = 0
end
if settings[2] and max_jobs > 0 then
  max_jobs = math.min(max_jobs, tonumber(settings[2]) - redis.call('ZCARD', active_key))
end
local rate_max = tonumber(settings[3] or 0)
if rate_max > 0 and max_jobs > 0 then
  local room = rate_max - tonumber(redis.call('GET', rate_key) or 0)
  if room <= 0 then
    max_jobs = 0
    wait_at_most(math.max(1, redis.call('PTTL', rate_key)))
  else
    max_jobs = math.min(max_jobs, room)
  end
end

-- 3. Priority aging: a job gains one priority level per aging_ms it waited, so low
-- priorities cannot starve forever. At most once per aging_ms, and bounded: the 100 lowest
-- prioritized jobs and the 100 oldest jobs of priority 0 are looked at. A job keeps its
-- place in line (its sequence) when it moves up.
local aging = tonumber(settings[8] or 0)
if aging > 0 and max_jobs > 0 and now - tonumber(settings[9] or 0) >= aging then
  redis.call('HSET', settings_key, 'aged_at', now)
  local tail = redis.call('ZRANGE', prioritized_key, -100, -1, 'WITHSCORES')
  for i = 1, #tail, 2 do
    local f = redis.call('HMGET', job_prefix .. tail[i], 'p', 'ct')
    local score = tonumber(tail[i + 1])
    local current = -math.floor(score / SEQUENCES_PER_PRIORITY)
    local aged = math.min(MAX_PRIORITY, tonumber(f[1] or 0) + math.floor((now - tonumber(f[2] or now)) / aging))
    if aged > current then
      redis.call('ZADD', prioritized_key, 'XX', -aged * SEQUENCES_PER_PRIORITY + score % SEQUENCES_PER_PRIORITY, tail[i])
    end
  end
  -- The oldest jobs of priority 0 sit at the right end of the list.
  for _ = 1, 100 do
    local id = redis.call('LINDEX', waiting_key, -1)
    if not id then break end
    local levels = math.floor((now - tonumber(redis.call('HGET', job_prefix .. id, 'ct') or now)) / aging)
    if levels < 1 then break end
    redis.call('RPOP', waiting_key)
    redis.call('ZADD', prioritized_key, priority_score(math.min(MAX_PRIORITY, levels), sequence_key), id)
  end
end

-- 4. Groups whose rate window reopened go back into the ring. Without grouped jobs this
-- costs one ZCARD and one EXISTS.
local ring = group_prefix .. 'ring'
local group_max = tonumber(settings[5] or 0)
local group_rate = tonumber(settings[6] or 0)
local group_rate_ms = tonumber(settings[7] or 0)
if redis.call('EXISTS', group_prefix .. 'limited') == 1 then
  local reopened = redis.call('ZRANGEBYSCORE', group_prefix .. 'limited', '-inf', now)
  if #reopened > 0 then
    redis.call('ZREMRANGEBYSCORE', group_prefix .. 'limited', '-inf', now)
    for i = 1, #reopened do ring_again(group_prefix, reopened[i]) end
  end
  local next_open = redis.call('ZRANGE', group_prefix .. 'limited', 0, 0, 'WITHSCORES')
  if next_open[2] then wait_at_most(math.max(1, tonumber(next_open[2]) - now)) end
end
local grouped = redis.call('ZCARD', ring) > 0

local ids = {}
local group_of = {}   -- id -> group, for grouped ids taken by this call
local taken_in = {}   -- group -> jobs taken from it by this call

-- 5. Suspects: the oldest one whose group may run now (of the first 10), alone, to an idle
-- worker; a busy worker is told to make room once it waited long enough (see the top).
local alone = 0
if max_jobs > 0 and redis.call('ZCARD', suspects_key) > 0 then
  local oldest = redis.call('ZRANGE', suspects_key, 0, 9, 'WITHSCORES')
  for i = 1, #oldest, 2 do
    local id, since = oldest[i], tonumber(oldest[i + 1])
    local g = redis.call('HGET', job_prefix .. id, 'g')
    local group_rate_key = g and group_prefix .. 'r:' .. g
    local allowed = not g or (
      (group_max <= 0 or tonumber(redis.call('HGET', group_prefix .. 'active', g) or 0) < group_max)
      and (group_rate <= 0 or tonumber(redis.call('GET', group_rate_key) or 0) < group_rate))
    if allowed then
      if idle then
        redis.call('ZREM', suspects_key, id)
        ids[1] = id
        if g then
          group_of[id] = g
          if group_rate > 0 and redis.call('INCR', group_rate_key) == 1 then
            redis.call('PEXPIRE', group_rate_key, group_rate_ms)
          end
        end
        alone = 1
      elseif since + room_ms <= now then
        redis.call('ZADD', suspects_key, 'XX', now, id)  -- the next busy worker is told room_ms later
        alone = 1
      else
        wait_at_most(since + room_ms - now)
      end
      break
    end
  end
end

-- 6. Take ids: grouped jobs one per group per turn; the others in dequeue order (positive
-- priorities, then priority 0 from the FIFO list, then negative).
local function take_grouped(limit)
  local taken = 0
  while taken < limit do
    local g = redis.call('ZRANGE', ring, 0, 0)[1]
    if not g then return end
    local blocked = false
    if group_max > 0 then
      local running = tonumber(redis.call('HGET', group_prefix .. 'active', g) or 0) + (taken_in[g] or 0)
      blocked = running >= group_max
    end
    local group_rate_key = group_prefix .. 'r:' .. g
    if not blocked and group_rate > 0 and tonumber(redis.call('GET', group_rate_key) or 0) >= group_rate then
      local reopen = redis.call('PTTL', group_rate_key)
      if reopen < 0 then reopen = group_rate_ms end
      redis.call('ZADD', group_prefix .. 'limited', now + reopen, g)
      wait_at_most(math.max(1, reopen))
      blocked = true
    end
    if blocked then
      -- Out of the ring until one of its jobs finishes (leave_group) or its window reopens.
      redis.call('ZREM', ring, g)
    else
      local popped = redis.call('ZPOPMIN', group_prefix .. 'q:' .. g)
      if popped[1] then
        ids[#ids + 1] = popped[1]
        group_of[popped[1]] = g
        taken_in[g] = (taken_in[g] or 0) + 1
        taken = taken + 1
        if group_rate > 0 and redis.call('INCR', group_rate_key) == 1 then
          redis.call('PEXPIRE', group_rate_key, group_rate_ms)
        end
      end
      redis.call('ZREM', ring, g)
      ring_again(group_prefix, g)  -- to the back of the ring, if it has more
    end
  end
end

if max_jobs > 0 and alone == 0 then
  if grouped then take_grouped(math.ceil(max_jobs / 2)) end
  local high = redis.call('ZRANGEBYSCORE', prioritized_key, '-inf', '(0', 'LIMIT', 0, max_jobs)
  if #high > 0 then
    redis.call('ZREMRANGEBYRANK', prioritized_key, 0, #high - 1)
    for i = 1, #high do ids[#ids + 1] = high[i] end
  end
  local need = max_jobs - #ids
  if need > 0 then
    local plain = redis.call('RPOP', waiting_key, need)
    if plain then
      for i = 1, #plain do ids[#ids + 1] = plain[i] end
    end
  end
  need = max_jobs - #ids
  if need > 0 then
    local low = redis.call('ZRANGE', prioritized_key, 0, need - 1)
    if #low > 0 then
      redis.call('ZREMRANGEBYRANK', prioritized_key, 0, #low - 1)
      for i = 1, #low do ids[#ids + 1] = low[i] end
    end
  end
  if grouped and #ids < max_jobs then take_grouped(max_jobs - #ids) end
end

-- 7. Lease each job to this worker with a new fencing token.
local reply = {-1, alone, now}
local started = 0
if #ids > 0 then
  local last_token = redis.call('INCRBY', sequence_key, #ids)
  local token = last_token - #ids
  local deadline = now + lease_ms
  local leases = {}  -- score, member pairs for one ZADD
  local feed = nil  -- the history hand-off, looked up at the first job that ends here
  local figures = metrics_new(metrics_prefix, settings_key)
  for i = 1, #ids do
    local id = ids[i]
    local key = job_prefix .. id
    local f = redis.call('HMGET', key, 'n', 'a', 'k', 'o', 'at', 'x', 'wt', 'pa', 'co', 'ct', 'rd')
    token = token + 1
    if f[1] and f[6] and tonumber(f[6]) <= now then
      local err = cjson.encode({type = 'Expired', message = 'the job was not started before its time to live ran out',
                                reason = 'expired'})
      notify_waiters(done_prefix, id, f[7], 'f' .. err)
      if feed == nil then feed = history_feed(history_key, history_feed_key) or false end
      if feed then hand_off(feed, key, id, 'expired', now, err) end
      redis.call('HSET', key, 's', 'failed', 'ft', now, 'e', err)
      keep_finished(failed_key, key, id, failed_keep_count, failed_keep_ms, now)
      emit(events_key, 'failed', 'id', id, 'reason', 'expired')
      metrics_count(figures, 'failed', 1)
      if group_of[id] then ring_again(group_prefix, group_of[id]) end
      if f[8] then tell_parent(outbox_key, f[8], id, 'f', err, now) end
    elseif f[1] then
      if group_of[id] then redis.call('HINCRBY', group_prefix .. 'active', group_of[id], 1) end
      local attempts = tonumber(f[5] or 0) + 1
      redis.call('HSET', key, 's', 'active', 'at', attempts, 'tk', token, 'st', now, 'w', worker_id)
      leases[#leases + 1] = deadline
      leases[#leases + 1] = id
      reply[#reply + 1] = id
      reply[#reply + 1] = token
      reply[#reply + 1] = attempts
      reply[#reply + 1] = f[1]
      reply[#reply + 1] = f[2]
      reply[#reply + 1] = f[3] or ''
      reply[#reply + 1] = f[4] or ''
      reply[#reply + 1] = f[9] or ''
      -- Ready since enqueued (ct), or since it last became ready again (rd: due after a
      -- delay, handed back, retried).
      reply[#reply + 1] = f[11] or f[10] or ''
      started = started + 1
    elseif redis.call('EXISTS', key) == 1 then
      -- A hash without a task name was not written by Conveyor: dead-letter it, fields kept
      -- for inspection, rather than drop it and leave it in no state at all.
      local err = cjson.encode({type = 'PayloadDecodeError', message = 'the job has no task name (hash field n)',
                                reason = 'bad_payload'})
      notify_waiters(done_prefix, id, f[7], 'f' .. err)
      if feed == nil then feed = history_feed(history_key, history_feed_key) or false end
      if feed then hand_off(feed, key, id, 'failed', now, err) end
      redis.call('HSET', key, 's', 'failed', 'ft', now, 'e', err)
      keep_finished(failed_key, key, id, failed_keep_count, failed_keep_ms, now)
      emit(events_key, 'failed', 'id', id, 'reason', 'bad_payload')
      metrics_count(figures, 'failed', 1)
      if f[8] then tell_parent(outbox_key, f[8], id, 'f', err, now) end
    end
    -- An id without a hash was removed while it waited; there is nothing to run.
    if not f[1] and group_of[id] then ring_again(group_prefix, group_of[id]) end
  end
  if feed then close_hand_off(feed) end
  metrics_flush(figures, now)
  if started > 0 then
    call_chunked('ZADD', active_key, leases)
    local started_ids = {}
    for r = 4, #reply, 9 do started_ids[#started_ids + 1] = reply[r] end
    emit(events_key, 'active', 'ids', table.concat(started_ids, ','), 'worker', worker_id)
  end
  if rate_max > 0 and started > 0 then
    if redis.call('INCRBY', rate_key, started) == started then
      redis.call('PEXPIRE', rate_key, tonumber(settings[4]))
    end
  end
  -- More work remains: wake the next blocked worker, so one enqueue wakes as many
  -- workers as there is work for, one after the other.
  if (#ids == max_jobs and (redis.call('LLEN', waiting_key) > 0 or redis.call('ZCARD', prioritized_key) > 0
                            or redis.call('ZCARD', ring) > 0))
     or (alone == 1 and redis.call('ZCARD', suspects_key) > 0) then
    wake(marker_key)
  end
end

local next_due = redis.call('ZRANGE', delayed_key, 0, 0, 'WITHSCORES')
if next_due[2] then
  wait_at_most(math.max(0, tonumber(next_due[2]) - now))
end
reply[1] = wait_ms
return reply

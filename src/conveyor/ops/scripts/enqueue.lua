-- enqueue: create one or many jobs in one call.
--
-- KEYS[1] waiting_key LIST   KEYS[2] prioritized_key ZSET   KEYS[3] delayed_key ZSET
-- KEYS[4] marker_key ZSET    KEYS[5] sequence_key counter   KEYS[6] job_prefix of job hashes
-- KEYS[7] events_key STREAM   KEYS[8] cancelled_key ZSET   KEYS[9] dedup_prefix of dedup keys
-- KEYS[10] group_prefix   KEYS[11] parents_key ZSET (jobs waiting for their children)
-- KEYS[12] suspects_key ZSET (where a debounced job being replaced may wait; see sweep.lua)
-- KEYS[13] history_key STREAM   KEYS[14] history_feed_key HASH (the history hand-off, see
--   include/history.lua: for a debounced job that is replaced)
-- ARGV: from first_job (1) on, for each job: id, task name, args JSON, E, then E name/value
--   pairs of optional fields: the enqueue fields of the legend atop include/common.lua
--   (priority, delay, time to live, dedup, group, flows; made by conveyor.ops.encode).
--   Most jobs have none (E = 0), which keeps a bulk call small.
-- Returns: a flat list of triples for jobs that were not simply created (empty when all
--   were): position (1-based), 'existed' | 'identical' | 'duplicate' | 'replaced', the
--   other job's id. existed: a job with this id exists (identical: with this task and these
--   arguments, see existing_kind); duplicate: the dedup key matched that job (nothing
--   written); replaced: created, and the debounced job it names was cancelled.
-- Errors: none of its own; the caller validates ids, sizes and priorities before calling.
-- @include common
-- @include history
-- @include jobs

local waiting_key = KEYS[1]
local prioritized_key = KEYS[2]
local delayed_key = KEYS[3]
local marker_key = KEYS[4]
local sequence_key = KEYS[5]
local job_prefix = KEYS[6]
local events_key = KEYS[7]
local cancelled_key = KEYS[8]
local dedup_prefix = KEYS[9]
local group_prefix = KEYS[10]
local parents_key = KEYS[11]
local suspects_key = KEYS[12]
local history_key = KEYS[13]
local history_feed_key = KEYS[14]
local first_job = 1
local argc = #ARGV

local now = now_ms()
local q = {waiting = waiting_key, prioritized = prioritized_key, delayed = delayed_key, sequence = sequence_key,
           job_prefix = job_prefix, cancelled = cancelled_key, dedup_prefix = dedup_prefix,
           group_prefix = group_prefix, parents = parents_key, suspects = suspects_key,
           history = history_key, history_feed = history_feed_key}
local notes = {}
local plain = {}  -- priority-0 ids, pushed together at the end (one LPUSH per 1,000 ids)
local created_ids = {}
local created = 0
local i = first_job
local position = 0

while i <= argc do
  local id, task, args, extras = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  position = position + 1
  local outcome, other
  if extras == '0' then
    -- A job without options in a call with some that have them (enqueue_plain.lua takes
    -- calls where none have any): inlined, so no table to build.
    extras = 0
    local key = job_prefix .. id
    if redis.call('EXISTS', key) == 0 then
      redis.call('HSET', key, 'n', task, 'a', args, 'ct', now, 's', 'waiting')
      outcome = 'plain'
    end
  else
    extras = tonumber(extras)
    outcome, other = create_job(q, now, id, task, args, ARGV, i + 4, extras)
  end
  if outcome == nil then
    notes[#notes + 1] = position
    notes[#notes + 1] = existing_kind(job_prefix .. id, task, args)
    notes[#notes + 1] = id
  elseif outcome == 'duplicate' then
    notes[#notes + 1] = position; notes[#notes + 1] = 'duplicate'; notes[#notes + 1] = other
  else
    if other then
      notes[#notes + 1] = position; notes[#notes + 1] = 'replaced'; notes[#notes + 1] = other
    end
    if outcome == 'plain' then plain[#plain + 1] = id end
    created = created + 1
    if #created_ids < 100 then created_ids[#created_ids + 1] = id end
  end
  i = i + 4 + extras * 2
end

announce_waiting(waiting_key, marker_key, events_key, plain, created, created_ids)
return notes

-- enqueue: create one or many jobs in one call.
--
-- KEYS[1] waiting LIST     KEYS[2] prioritized ZSET   KEYS[3] delayed ZSET
-- KEYS[4] marker ZSET      KEYS[5] sequence counter   KEYS[6] job hash prefix
-- KEYS[7] events STREAM   KEYS[8] cancelled ZSET   KEYS[9] dedup-key prefix   KEYS[10] group prefix
-- KEYS[11] parents ZSET (jobs waiting for their children)   KEYS[12] suspects ZSET (where a
--   debounced job being replaced may wait; see sweep.lua)
-- ARGV: for each job: id, task name, args JSON, E, then E pairs of optional fields:
--   'k' kwargs JSON, 'o' options JSON, 'p' priority (non-zero integer),
--   'w' when: '+<ms>' after a delay or '@<ms>' at an absolute time (ms since the epoch),
--   'x' time to live in ms: a job not started by then expires (see claim.lua),
--   'du' deduplication key, 'dw' its window in ms (0: while the matched job is unfinished),
--   'db' debounce (a later enqueue within the window replaces a job that has not started),
--   'g' group key: the job waits in its group's line, served round-robin with other groups
--   and held to the per-group limits (see claim.lua);
--   flows: 'pa' "<queue> <id>" of the parent, and for a parent 'dp' its number of children
--   (it waits in the parents set until child.lua has heard of each), 'ch' their references
--   as a JSON array, 'fp' 'ignore' to run even if a child failed, 'pr' 1 to pass results.
--   Most jobs have none (E = 0), which keeps a bulk call small.
-- Returns: a flat list of triples for jobs that were not simply created (empty when all
--   were): position (1-based), 'existed' | 'identical' | 'duplicate' | 'replaced', the
--   other job's id. existed: a job with this id exists (identical: with this task and these
--   arguments, see existing_kind); duplicate: the dedup key matched that job (nothing
--   written); replaced: created, and the debounced job it names was cancelled.
-- Errors: none of its own; the caller validates ids, sizes and priorities before calling.
-- @include common
-- @include jobs

local now = now_ms()
local q = {waiting = KEYS[1], prioritized = KEYS[2], delayed = KEYS[3], sequence = KEYS[5], prefix = KEYS[6],
           cancelled = KEYS[8], dedup_prefix = KEYS[9], groups = KEYS[10],
           parents = KEYS[11], suspects = KEYS[12]}
local notes = {}
local plain = {}  -- priority-0 ids, pushed together at the end (one LPUSH per 1,000 ids)
local created_ids = {}
local created = 0
local i = 1
local position = 0

local prefix = KEYS[6]
local argc = #ARGV
while i <= argc do
  position = position + 1
  local extras = 0
  local outcome, other
  if ARGV[i + 3] == '0' then
    -- A job without options in a call with some that have them (enqueue_plain.lua takes
    -- calls where none have any): inlined, so no table to build.
    local key = prefix .. ARGV[i]
    if redis.call('EXISTS', key) == 0 then
      redis.call('HSET', key, 'n', ARGV[i + 1], 'a', ARGV[i + 2], 'ct', now, 's', 'waiting')
      outcome = 'plain'
    end
  else
    extras = tonumber(ARGV[i + 3])
    outcome, other = create_job(q, now, ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV, i + 4, extras)
  end
  if outcome == nil then
    notes[#notes + 1] = position
    notes[#notes + 1] = existing_kind(prefix .. ARGV[i], ARGV[i + 1], ARGV[i + 2])
    notes[#notes + 1] = ARGV[i]
  elseif outcome == 'duplicate' then
    notes[#notes + 1] = position; notes[#notes + 1] = 'duplicate'; notes[#notes + 1] = other
  else
    if other then
      notes[#notes + 1] = position; notes[#notes + 1] = 'replaced'; notes[#notes + 1] = other
    end
    if outcome == 'plain' then plain[#plain + 1] = ARGV[i] end
    created = created + 1
    if #created_ids < 100 then created_ids[#created_ids + 1] = ARGV[i] end
  end
  i = i + 4 + extras * 2
end

announce_waiting(KEYS[1], KEYS[4], KEYS[7], plain, created, created_ids)
return notes

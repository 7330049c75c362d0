-- enqueue_plain: create jobs that have no options at all (no priority, delay, dedup,
-- group, flow...): the common case of a single or bulk enqueue, kept apart from
-- enqueue.lua so that it pays for four keys and two helpers, not eleven keys and every
-- helper of job creation. A call is about 6 us cheaper on the server (Valkey 9).
--
-- KEYS[1] waiting_key LIST   KEYS[2] marker_key ZSET   KEYS[3] events_key STREAM
-- KEYS[4] job_prefix of job hashes
-- ARGV: from first_job (1) on, for each job: id, task name, args JSON.
-- Returns: a flat list of triples (position, 'existed' | 'identical', id) for ids that
--   already had a job (nothing written for them), as enqueue.lua does; empty when all were
--   created. 'identical': that job has this task and these arguments (see existing_kind).
-- Errors: none of its own; the caller validates ids and sizes before calling.
-- @include common
-- @include jobs

local waiting_key = KEYS[1]
local marker_key = KEYS[2]
local events_key = KEYS[3]
local job_prefix = KEYS[4]
local first_job = 1

local now = now_ms()
local call = redis.call
-- A bulk asks once whether any of its keys exists (EXISTS counts them) instead of once per
-- job: almost always none does, and the per-job check below is skipped. About 2,300 fewer
-- server instructions per job on Valkey 9 (bench/instructions.py: 30,600 -> 28,300).
local taken = 1
if #ARGV > 3 then
  local keys = {}
  for i = first_job, #ARGV, 3 do
    keys[#keys + 1] = job_prefix .. ARGV[i]
  end
  taken = 0
  for start = 1, #keys, CALL_CHUNK do
    taken = taken + call('EXISTS', unpack(keys, start, math.min(start + CALL_CHUNK - 1, #keys)))
  end
end
local notes = {}
local created = {}
local made = 0
for i = first_job, #ARGV, 3 do
  local id, task, args = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local key = job_prefix .. id  -- made again rather than kept: a single enqueue builds no table
  if taken == 0 or call('EXISTS', key) == 0 then
    call('HSET', key, 'n', task, 'a', args, 'ct', now, 's', 'waiting')
    made = made + 1
    created[made] = id
  else
    notes[#notes + 1] = (i + 2) / 3
    notes[#notes + 1] = existing_kind(key, task, args)
    notes[#notes + 1] = id
  end
end
announce_waiting(waiting_key, marker_key, events_key, created, made, created)
return notes

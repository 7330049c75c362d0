-- schedule: fire one tick of a repeatable job, exactly once however many schedulers race.
--
-- KEYS[1] waiting_key LIST   KEYS[2] prioritized_key ZSET   KEYS[3] delayed_key ZSET
-- KEYS[4] marker_key ZSET   KEYS[5] sequence_key counter   KEYS[6] job_prefix of job hashes
-- KEYS[7] events_key STREAM   KEYS[8] schedule_next_key ZSET (name -> ms of its next tick)
-- KEYS[9] group_prefix
-- ARGV[1] name of the schedule   ARGV[2] tick: the one this scheduler saw due (ms)
-- ARGV[3] next_tick (ms)   ARGV[4] fire: 1 to enqueue a job for this tick, 0 to skip it
--   (missed-tick policy "skip")
-- ARGV[5] job_id (deterministic: name and tick)   ARGV[6] task name   ARGV[7] args JSON
-- ARGV[8] extras: number of extra fields E, then, from first_extra (9) on, E name/value
--   pairs (the enqueue fields of the legend atop include/common.lua)
-- Returns: 0 when another scheduler already handled this tick (or the schedule is gone);
--   1 when the tick was skipped; 2 when a job was enqueued; 3 when its job already existed.
-- Errors: none.
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
local schedule_next_key = KEYS[8]
local group_prefix = KEYS[9]
local name = ARGV[1]
local tick = tonumber(ARGV[2])
local next_tick = tonumber(ARGV[3])
local fire = ARGV[4]
local job_id = ARGV[5]
local task = ARGV[6]
local args = ARGV[7]
local extras = tonumber(ARGV[8])
local first_extra = 9

local current = redis.call('ZSCORE', schedule_next_key, name)
if not current or tonumber(current) ~= tick then
  return 0
end
redis.call('ZADD', schedule_next_key, next_tick, name)
if fire ~= '1' then
  return 1
end
local q = {waiting = waiting_key, prioritized = prioritized_key, delayed = delayed_key, sequence = sequence_key,
           job_prefix = job_prefix, group_prefix = group_prefix}
-- Scheduled ticks carry no dedup options: their ids already make each tick unique.
local outcome = create_job(q, now_ms(), job_id, task, args, ARGV, first_extra, extras)
if outcome == nil then
  return 3
end
-- The schedule is named on its job, for the history (see include/history.lua).
redis.call('HSET', job_prefix .. job_id, 'sc', name)
if outcome == 'plain' then
  redis.call('LPUSH', waiting_key, job_id)
end
wake(marker_key)
emit(events_key, 'enqueued', 'id', job_id, 'schedule', name)
return 2

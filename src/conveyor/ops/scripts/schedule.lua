-- schedule: fire one tick of a repeatable job, exactly once however many schedulers race.
--
-- KEYS[1] waiting LIST   KEYS[2] prioritized ZSET   KEYS[3] delayed ZSET   KEYS[4] marker ZSET
-- KEYS[5] sequence counter   KEYS[6] job hash prefix   KEYS[7] events STREAM
-- KEYS[8] schedule next-run ZSET (name -> ms of its next tick)   KEYS[9] group prefix
-- ARGV[1] schedule name   ARGV[2] the tick this scheduler saw due (ms)   ARGV[3] the next tick (ms)
-- ARGV[4] 1 to enqueue a job for this tick, 0 to skip it (missed-tick policy "skip")
-- ARGV[5] job id (deterministic: name and tick)   ARGV[6] task name   ARGV[7] args JSON
-- ARGV[8] number of extra fields E, then E name/value pairs (as in enqueue.lua)
-- Returns: 0 when another scheduler already handled this tick (or the schedule is gone);
--   1 when the tick was skipped; 2 when a job was enqueued; 3 when its job already existed.
-- Errors: none.
-- @include common
-- @include jobs

local current = redis.call('ZSCORE', KEYS[8], ARGV[1])
if not current or tonumber(current) ~= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[8], tonumber(ARGV[3]), ARGV[1])
if ARGV[4] ~= '1' then
  return 1
end
local q = {waiting = KEYS[1], prioritized = KEYS[2], delayed = KEYS[3], sequence = KEYS[5], prefix = KEYS[6],
           groups = KEYS[9]}
-- Scheduled ticks carry no dedup options: their ids already make each tick unique.
local outcome = create_job(q, now_ms(), ARGV[5], ARGV[6], ARGV[7], ARGV, 9, tonumber(ARGV[8]))
if outcome == nil then
  return 3
end
if outcome == 'plain' then
  redis.call('LPUSH', KEYS[1], ARGV[5])
end
wake(KEYS[4])
emit(KEYS[7], 'enqueued', 'id', ARGV[5], 'schedule', ARGV[1])
return 2

-- progress: a running job reports its progress or appends a log line.
--
-- KEYS[1] job hash   KEYS[2] job's log LIST   KEYS[3] events STREAM
-- ARGV[1] fencing token   ARGV[2] 'progress' or 'log'   ARGV[3] progress JSON or log line
-- ARGV[4] max log lines kept   ARGV[5] ms the log outlives its last line   ARGV[6] job id
-- Returns: 1 written, 0 refused (the attempt is no longer current).
-- Errors: none.
-- @include common

local f = redis.call('HMGET', KEYS[1], 'tk', 's')
if f[1] ~= ARGV[1] or f[2] ~= 'active' then
  return 0
end
if ARGV[2] == 'progress' then
  redis.call('HSET', KEYS[1], 'pg', ARGV[3])
  -- Small values travel in the event; larger ones are read from the job.
  if #ARGV[3] <= 200 then
    emit(KEYS[3], 'progress', 'id', ARGV[6], 'value', ARGV[3])
  else
    emit(KEYS[3], 'progress', 'id', ARGV[6])
  end
else
  redis.call('RPUSH', KEYS[2], ARGV[3])
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[4]), -1)
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[5]))
end
return 1

-- progress: a running job reports its progress or appends a log line.
--
-- KEYS[1] job hash   KEYS[2] job's log LIST
-- ARGV[1] fencing token   ARGV[2] 'progress' or 'log'   ARGV[3] progress JSON or log line
-- ARGV[4] max log lines kept   ARGV[5] ms the log outlives its last line
-- Returns: 1 written, 0 refused (the attempt is no longer current).
-- Errors: none.

local f = redis.call('HMGET', KEYS[1], 'tk', 's')
if f[1] ~= ARGV[1] or f[2] ~= 'active' then
  return 0
end
if ARGV[2] == 'progress' then
  redis.call('HSET', KEYS[1], 'pg', ARGV[3])
else
  redis.call('RPUSH', KEYS[2], ARGV[3])
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[4]), -1)
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[5]))
end
return 1

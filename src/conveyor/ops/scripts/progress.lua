-- progress: a running job reports its progress or appends a log line.
--
-- KEYS[1] job_key HASH   KEYS[2] logs_key LIST of the job's log lines   KEYS[3] events_key STREAM
-- ARGV[1] token: the attempt's fencing token   ARGV[2] kind: 'progress' or 'log'
-- ARGV[3] value: progress JSON or log line   ARGV[4] max_lines of the log kept
-- ARGV[5] log_ttl_ms: how long the log outlives its last line   ARGV[6] id of the job
-- Returns: 1 written, 0 refused (the attempt is no longer current).
-- Errors: none.
-- @include common

local job_key = KEYS[1]
local logs_key = KEYS[2]
local events_key = KEYS[3]
local token = ARGV[1]
local kind = ARGV[2]
local value = ARGV[3]
local max_lines = tonumber(ARGV[4])
local log_ttl_ms = tonumber(ARGV[5])
local id = ARGV[6]

-- Small progress values travel in the event; larger ones are read from the job.
local INLINE_PROGRESS_BYTES = 200

local f = redis.call('HMGET', job_key, 'tk', 's')
if f[1] ~= token or f[2] ~= 'active' then
  return 0
end
if kind == 'progress' then
  redis.call('HSET', job_key, 'pg', value)
  if #value <= INLINE_PROGRESS_BYTES then
    emit(events_key, 'progress', 'id', id, 'value', value)
  else
    emit(events_key, 'progress', 'id', id)
  end
else
  redis.call('RPUSH', logs_key, value)
  redis.call('LTRIM', logs_key, -max_lines, -1)
  redis.call('PEXPIRE', logs_key, log_ttl_ms)
end
return 1

-- await: register a client that will block until a job finishes, or answer at once.
--
-- KEYS[1] job_key HASH
-- Returns: false when there is no such job; {state, payload} where payload is the result
--   (completed) or error (failed, cancelled) JSON when the job already finished, else '' after the
--   caller was registered as a waiter (complete/fail push to the job's done list for it).
-- Errors: none.

local job_key = KEYS[1]

local f = redis.call('HMGET', job_key, 's', 'r', 'e')
if not f[1] then
  return false
end
if f[1] == 'completed' then
  return {f[1], f[2] or 'null'}
end
if f[1] == 'failed' or f[1] == 'cancelled' then
  return {f[1], f[3] or '{}'}
end
redis.call('HINCRBY', job_key, 'wt', 1)
return {f[1], ''}

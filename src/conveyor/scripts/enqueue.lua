-- enqueue: create one or many jobs in one call.
--
-- KEYS[1] waiting LIST     KEYS[2] prioritized ZSET   KEYS[3] delayed ZSET
-- KEYS[4] marker ZSET      KEYS[5] sequence counter   KEYS[6] job hash prefix
-- KEYS[7] events STREAM
-- ARGV: for each job: id, task name, args JSON, E, then E pairs of optional fields:
--   'k' kwargs JSON, 'o' options JSON, 'p' priority (non-zero integer),
--   'w' when: '+<ms>' after a delay or '@<ms>' at an absolute time (ms since the epoch),
--   'x' time to live in ms: a job not started by then expires (see claim.lua).
--   Most jobs have none (E = 0), which keeps a bulk call small.
-- Returns: the 1-based positions of jobs whose id already existed (empty when all were
--   created). Those jobs are left untouched; the caller reports "already existed".
-- Errors: none of its own; the caller validates ids, sizes and priorities before calling.
-- @include common
-- @include jobs

local now = now_ms()
local q = {waiting = KEYS[1], prioritized = KEYS[2], delayed = KEYS[3], sequence = KEYS[5], prefix = KEYS[6]}
local existed = {}
local plain = {}  -- priority-0 ids, pushed together at the end (one LPUSH per 1,000 ids)
local created_ids = {}
local created = 0
local i = 1
local position = 0

while i <= #ARGV do
  position = position + 1
  local extras = tonumber(ARGV[i + 3])
  local outcome = create_job(q, now, ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV, i + 4, extras)
  if outcome == nil then
    existed[#existed + 1] = position
  else
    if outcome == 'plain' then plain[#plain + 1] = ARGV[i] end
    created = created + 1
    if #created_ids < 100 then created_ids[#created_ids + 1] = ARGV[i] end
  end
  i = i + 4 + extras * 2
end

call_chunked('LPUSH', KEYS[1], plain)
if created > 0 then
  wake(KEYS[4])
  -- One event per call: a bulk enqueue lists its first 100 ids and says how many it made.
  emit(KEYS[7], 'enqueued', 'ids', table.concat(created_ids, ','), 'count', created)
end
return existed

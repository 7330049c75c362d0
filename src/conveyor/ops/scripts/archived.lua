-- archived: forget hand-off entries the history store has committed (see include/history.lua).
--
-- KEYS[1] history_key STREAM (the hand-off)   KEYS[2] history_feed_key HASH
-- ARGV[1] group: the archivers' consumer group   then, from first_entry (2) on, pairs: entry
--   id, the number of jobs it holds.
-- Returns: how many of the entries were still pending (0 for a batch that another archiver,
--   which had claimed the same entries, committed first).
-- Errors: none.
-- Acknowledge and delete in one step: an entry acknowledged but not deleted would never be
-- read again, yet hold its memory and a place under the hand-off's bound for good. Only
-- the archiver whose acknowledgement counts takes the entry's jobs off the count held.
-- @include common

local history_key = KEYS[1]
local history_feed_key = KEYS[2]
local group = ARGV[1]
local first_entry = 2

local pending, released = 0, 0
local entries = {}
for i = first_entry, #ARGV, 2 do
  if redis.call('XACK', history_key, group, ARGV[i]) == 1 then
    pending = pending + 1
    released = released + tonumber(ARGV[i + 1])
  end
  entries[#entries + 1] = ARGV[i]
end
call_chunked('XDEL', history_key, entries)
if released > 0 then
  local held = redis.call('HINCRBY', history_feed_key, 'held', -released)
  if held < 0 then  -- entries written before the count existed, or a count set by hand
    redis.call('HSET', history_feed_key, 'held', 0)
  end
end
return pending

-- archived: forget hand-off entries the history store has committed (see include/history.lua).
--
-- KEYS[1] history_key STREAM (the hand-off)
-- ARGV[1] group: the archivers' consumer group   then, from first_entry (2) on, entry ids.
-- Returns: how many of the entries were still pending (0 for a batch that another archiver,
--   which had claimed the same entries, committed first).
-- Errors: none.
-- Acknowledge and delete in one step: an entry acknowledged but not deleted would never be
-- read again, yet hold its memory and a place under the hand-off's bound for good.
-- @include common

local history_key = KEYS[1]
local group = ARGV[1]
local first_entry = 2

local entries = {}
for i = first_entry, #ARGV do entries[#entries + 1] = ARGV[i] end
local pending = 0
for start = 1, #entries, CALL_CHUNK do
  local chunk = {unpack(entries, start, math.min(start + CALL_CHUNK - 1, #entries))}
  pending = pending + redis.call('XACK', history_key, group, unpack(chunk))
  redis.call('XDEL', history_key, unpack(chunk))
end
return pending

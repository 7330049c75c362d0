-- history_on: turn a queue's history on (see include/history.lua) and make sure the
-- archivers' consumer group exists, in one step.
--
-- KEYS[1] history_key STREAM (the hand-off)   KEYS[2] history_feed_key HASH
-- ARGV[1] max_jobs: how many finished jobs the hand-off may hold   ARGV[2] group name
-- ARGV[3] replace: 1 to set the bound even if one is set already, 0 to keep one set before
-- Returns: the bound now in force.
-- Errors: none.

local history_key = KEYS[1]
local history_feed_key = KEYS[2]
local max_jobs = ARGV[1]
local group = ARGV[2]
local replace = ARGV[3] == '1'

if replace then
  redis.call('HSET', history_feed_key, 'max', max_jobs)
else
  redis.call('HSETNX', history_feed_key, 'max', max_jobs)
end
-- pcall: BUSYGROUP, the group exists already, is the usual answer.
redis.pcall('XGROUP', 'CREATE', history_key, group, '0', 'MKSTREAM')
return tonumber(redis.call('HGET', history_feed_key, 'max'))

-- counts: number of jobs in each state of one queue, read in one consistent snapshot.
--
-- KEYS[1] waiting_key LIST   KEYS[2] prioritized_key ZSET   KEYS[3] delayed_key ZSET
-- KEYS[4] active_key ZSET   KEYS[5] completed_key ZSET   KEYS[6] failed_key ZSET
-- KEYS[7] cancelled_key ZSET   KEYS[8] group_prefix   KEYS[9] parents_key ZSET
-- KEYS[10] suspects_key ZSET
-- Returns: {waiting, delayed, active, completed, failed, cancelled, waiting_children};
--   waiting counts suspects too (see sweep.lua): to users they are waiting jobs.
-- Errors: none.
-- @include common

local waiting_key = KEYS[1]
local prioritized_key = KEYS[2]
local delayed_key = KEYS[3]
local active_key = KEYS[4]
local completed_key = KEYS[5]
local failed_key = KEYS[6]
local cancelled_key = KEYS[7]
local group_prefix = KEYS[8]
local parents_key = KEYS[9]
local suspects_key = KEYS[10]

return state_counts(waiting_key, prioritized_key, delayed_key, active_key, completed_key, failed_key,
                    cancelled_key, group_prefix, parents_key, suspects_key)

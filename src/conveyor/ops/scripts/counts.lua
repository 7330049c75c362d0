-- counts: number of jobs in each state of one queue, read in one consistent snapshot.
--
-- KEYS[1] waiting LIST   KEYS[2] prioritized ZSET   KEYS[3] delayed ZSET   KEYS[4] active ZSET
-- KEYS[5] completed ZSET KEYS[6] failed ZSET        KEYS[7] cancelled ZSET   KEYS[8] group prefix
-- KEYS[9] parents ZSET   KEYS[10] suspects ZSET
-- Returns: {waiting, delayed, active, completed, failed, cancelled, waiting_children};
--   waiting counts suspects too (see sweep.lua): to users they are waiting jobs.
-- Errors: none.
-- @include common

return {
  redis.call('LLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2]) + grouped_waiting(KEYS[8])
    + redis.call('ZCARD', KEYS[10]),
  redis.call('ZCARD', KEYS[3]),
  redis.call('ZCARD', KEYS[4]),
  redis.call('ZCARD', KEYS[5]),
  redis.call('ZCARD', KEYS[6]),
  redis.call('ZCARD', KEYS[7]),
  redis.call('ZCARD', KEYS[9]),
}

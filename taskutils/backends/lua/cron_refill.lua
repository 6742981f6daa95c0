-- Store more run times of a cron schedule that is running low (_claim.lua put it in cron_low), as
-- computed by a worker (recurrent.py: Redis's scripts cannot compute cron times). Several workers
-- may compute the same refill: only the one that read the schedule's current `through` stores it.
-- KEYS[1] - the queue's prefix P. Touches P .. rec, rec:<name>, rec_times:<name>, cron_low, idle, wake
-- ARGV[1] - schedule name
-- ARGV[2] - the schedule's `through` (its last stored time) the times were computed from
-- ARGV[3..] - the run times to add, oldest first (may be none: the schedule has no more)
-- returns   1 if stored, 0 if the schedule is gone or was refilled meanwhile
refuse_when_full() -- Redis over maxmemory refuses the whole call (see _store.lua)
expect_keys('rec', 'cron_low')
local name = ARGV[1]
local key, times_key = P .. 'rec:' .. name, P .. 'rec_times:' .. name
expect(key, 'hash')
expect(times_key, 'zset')
if redis.call('EXISTS', key) == 0 or (redis.call('HGET', key, 'through') or '') ~= ARGV[2] then
  redis.call('SREM', P .. 'cron_low', name)
  return 0
end
store_cron_times(name, 3)
redis.call('SREM', P .. 'cron_low', name)
local first = redis.call('ZRANGE', times_key, '0', '0', 'WITHSCORES')[2]
if first then
  redis.call('ZADD', P .. 'rec', first, name)
  pcall(wake, 1, nil)
end
return 1

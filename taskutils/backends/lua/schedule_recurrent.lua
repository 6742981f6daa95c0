-- Create or replace a named recurrent schedule, and wake a consumer to wait for its time. Setting
-- a schedule with the same definition as the stored one changes nothing (several producers that
-- start at once all set it, and it must not restart its grid or fire again).
-- KEYS[1] - the queue's prefix P. Touches P .. rec, rec:<name>, rec_times:<name>, cron_low, epoch,
--           idle, wake
-- ARGV[1] - schedule name
-- ARGV[2] - msgpack body of the task each run executes
-- ARGV[3] - interval seconds (0 for a cron schedule)
-- ARGV[4] - runs left (-1: forever)
-- ARGV[5] - stop time, or "" for never
-- ARGV[6] - first run time
-- ARGV[7] - the definition as the user gave it (compared to tell a schedule set again unchanged)
-- ARGV[8] - cron expression ("" for an interval schedule)
-- ARGV[9] - the cron expression's time zone
-- ARGV[10] - misfire rule: coalesce, skip or catch_up
-- ARGV[11] - max_catch_up
-- ARGV[12..] - a cron schedule's next run times, computed ahead by the caller (recurrent.py)
-- returns   1 if stored, 0 if an identical schedule was there already
refuse_when_full() -- Redis over maxmemory refuses the whole call (see _store.lua)
expect_keys('rec', 'cron_low')
local key, times_key = P .. 'rec:' .. ARGV[1], P .. 'rec_times:' .. ARGV[1]
expect(key, 'hash')
expect(times_key, 'zset')
if ARGV[7] ~= '' and redis.call('HGET', key, 'definition') == ARGV[7]
    and redis.call('ZSCORE', P .. 'rec', ARGV[1]) then
  return 0
end
epoch() -- made with the queue: the runs' ids need it
redis.call('DEL', key, times_key)
redis.call('SREM', P .. 'cron_low', ARGV[1])
redis.call('HSET', key, 'body', ARGV[2], 'interval', ARGV[3], 'repeats', ARGV[4], 'stop', ARGV[5], 'definition', ARGV[7],
  'cron', ARGV[8], 'tz', ARGV[9], 'misfire', ARGV[10], 'max_catch_up', ARGV[11])
store_cron_times(ARGV[1], 12)
redis.call('ZADD', P .. 'rec', ARGV[6], ARGV[1])
pcall(wake, 1, nil)
return 1

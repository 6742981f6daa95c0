-- Create or replace a named recurrent schedule, and wake a consumer to wait for its time. Setting
-- a schedule with the same definition as the stored one changes nothing (several producers that
-- start at once all set it, and it must not restart its grid or fire again).
-- KEYS[1] - the queue's prefix P. Touches P .. rec, rec:<name>, epoch, idle, wake
-- ARGV[1] - schedule name
-- ARGV[2] - msgpack body of the task each run executes
-- ARGV[3] - interval seconds
-- ARGV[4] - runs left (-1: forever)
-- ARGV[5] - stop time, or "" for never
-- ARGV[6] - first run time
-- ARGV[7] - the definition as the user gave it (compared to tell a schedule set again unchanged)
-- returns   1 if stored, 0 if an identical schedule was there already
refuse_when_full() -- Redis over maxmemory refuses the whole call (see _store.lua)
expect_keys('rec')
local key = P .. 'rec:' .. ARGV[1]
if ARGV[7] ~= '' and redis.call('HGET', key, 'definition') == ARGV[7]
    and redis.call('ZSCORE', P .. 'rec', ARGV[1]) then
  return 0
end
epoch() -- made with the queue: the runs' ids need it
redis.call('DEL', key)
redis.call('HSET', key, 'body', ARGV[2], 'interval', ARGV[3], 'repeats', ARGV[4], 'stop', ARGV[5], 'definition', ARGV[7])
redis.call('ZADD', P .. 'rec', ARGV[6], ARGV[1])
pcall(wake, 1, nil)
return 1

-- Create or replace a named recurrent schedule, and wake one idle consumer to wait for its time.
-- KEYS[1] - queue prefix (see _prelude.lua)
-- ARGV[1] - schedule name
-- ARGV[2] - msgpack body of the task each run executes
-- ARGV[3] - interval seconds
-- ARGV[4] - runs left (-1: forever)
-- ARGV[5] - stop time, or "" for never
-- ARGV[6] - first run time
-- returns   1
local key = P .. 'rec:' .. ARGV[1]
redis.call('DEL', key)
redis.call('HSET', key, 'body', ARGV[2], 'interval', ARGV[3], 'repeats', ARGV[4], 'stop', ARGV[5])
redis.call('ZADD', P .. 'rec', ARGV[6], ARGV[1])
wake(1, clock())
return 1

-- Record a live worker, stamped with the server's clock; its heartbeat calls this again.
-- KEYS[1] - "tu:" (workers are not per queue). Touches tu:worker:<consumer>, tu:workers
-- ARGV[1] - consumer id
-- ARGV[2] - seconds the record lives unless renewed
-- ARGV[3..] - pairs: field, value (host, pid, threads, queues, ...)
-- returns   1
refuse_when_full() -- Redis over maxmemory refuses the whole call (see _store.lua)
expect(P .. 'workers', 'zset')
local key, now = P .. 'worker:' .. ARGV[1], clock()
redis.call('DEL', key)
redis.call('HSET', key, 'heartbeat', tostring(now), unpack(ARGV, 3))
redis.call('PEXPIRE', key, math.ceil(tonumber(ARGV[2]) * 1000))
redis.call('ZADD', P .. 'workers', now, ARGV[1])
return 1

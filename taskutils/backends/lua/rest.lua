-- A consumer stops waiting for work (it pauses or stops): new work now wakes the others, and a
-- wake token it may have taken without claiming goes to them too.
-- KEYS[1] - the queue's prefix P. Touches P .. idle, wake, prios, ready:<top level>, config, leases
-- ARGV[1] - consumer id
-- returns   1 if the consumer was waiting, else 0
refuse_when_full() -- Redis over maxmemory refuses the whole call (see _store.lua)
local removed = redis.call('ZREM', P .. 'idle', ARGV[1])
pcall(wake_for_ready, nil)
return removed

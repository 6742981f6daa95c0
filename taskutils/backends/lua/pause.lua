-- Pause or resume a queue across the fleet (config field paused): while it is paused, claims of
-- the queue take no task (_claim.lua) and workers hand back the claims they hold and have not
-- started; running tasks finish, enqueues and settlements go on. Resuming wakes every consumer
-- that waits on the queue.
-- KEYS[1] - the queue's prefix P. Touches P .. config, idle, wake
-- ARGV[1] - "1" to pause, "0" to resume
-- returns   1 if this changed whether the queue is paused, else 0
refuse_when_full() -- Redis over maxmemory refuses the whole call (see _store.lua)
expect_keys('config')
if ARGV[1] == '1' then return redis.call('HSETNX', P .. 'config', 'paused', '1') end
local changed = redis.call('HDEL', P .. 'config', 'paused')
pcall(wake, 1e9) -- best effort (_queue.lua): waiting consumers also look by themselves when their wait ends
return changed

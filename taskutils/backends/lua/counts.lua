-- Count the tasks of a queue in each state.
-- KEYS[1] - the queue's prefix P. Touches P .. prios, ready:*, scheduled, leases, failed (reads only)
-- returns   {scheduled, queued, running, failed}
local queued = 0
for _, level in ipairs(redis.call('ZRANGE', P .. 'prios', 0, -1)) do
  queued = queued + redis.call('LLEN', P .. 'ready:' .. level)
end
return {
  redis.call('ZCARD', P .. 'scheduled'),
  queued,
  redis.call('ZCARD', P .. 'leases'),
  redis.call('HLEN', P .. 'failed'),
}

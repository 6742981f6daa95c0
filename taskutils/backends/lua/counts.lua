-- Count the tasks of a queue in each state.
-- KEYS[1] - queue prefix (see _prelude.lua)
-- returns   {scheduled, queued, running, failed}
local queued = 0
for _, level in ipairs(redis.call('ZRANGE', P .. 'prios', 0, -1)) do
  queued = queued + redis.call('LLEN', P .. 'ready:' .. level)
end
local ahead = redis.call('SCARD', P .. 'ahead') -- claimed, but waiting for a slot of the cap
return {
  redis.call('ZCARD', P .. 'scheduled'),
  queued + ahead,
  redis.call('ZCARD', P .. 'leases') - ahead,
  redis.call('HLEN', P .. 'failed'),
}

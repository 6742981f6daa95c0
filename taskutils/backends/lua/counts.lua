-- Count the tasks of a queue in each state.
-- KEYS[1] - the queue's prefix P. Touches P .. prios, ready:*, kqueued, scheduled, leases, failed,
--           cancel_q, cancel_s (reads only)
-- returns   {scheduled, queued, running, failed}
local queued = math.max(tonumber(redis.call('GET', P .. 'kqueued')) or 0, 0) -- keyed tasks (_lanes.lua)
for _, level in ipairs(redis.call('ZRANGE', P .. 'prios', '0', '-1')) do
  queued = queued + redis.call('LLEN', P .. 'ready:' .. level)
end
-- tasks cancelled while they waited are still in their list or the schedule (cancel.lua); a
-- mark set of the wrong type (written by hand) counts as empty here, and exchanges report it
local function marked(key)
  local ok, count = pcall(redis.call, 'SCARD', P .. key)
  return ok and count or 0
end
return {
  redis.call('ZCARD', P .. 'scheduled') - marked('cancel_s'),
  queued - marked('cancel_q'),
  redis.call('ZCARD', P .. 'leases'),
  redis.call('HLEN', P .. 'failed'),
}

-- Set or remove the limit of one key of a queue, or the queue's default limit (_lanes.lua).
-- A key's new limit applies from its next start: its lane is placed again at once. A new default
-- applies to each key without its own limit from its next start too, but a lane already waiting
-- for a time, or at its concurrency limit, under the old default waits that out first.
-- KEYS[1] - the queue's prefix P. Touches P .. limits, config, the lane's keys, idle, wake
-- ARGV[1] - the key, or "" for the default
-- ARGV[2] - the limit "<concurrency>|<rate>|<per>|<burst>|<adaptive 1/0>", or "" to remove it
-- returns   1 if the key (or default) had a limit before, else 0
refuse_when_full() -- Redis over maxmemory refuses the whole call (see _store.lua)
expect_keys('limits', 'config', 'turns', 'later')
local lane, limit = ARGV[1], ARGV[2]
if lane ~= '' then
  expect_lane(lane, '0')
  expect_lane_end(lane) -- the lane is placed again below, from its state
end
local store, field = P .. 'limits', lane
if lane == '' then store, field = P .. 'config', 'default_limit' end
local had = redis.call('HEXISTS', store, field)
if limit == '' then redis.call('HDEL', store, field) else redis.call('HSET', store, field, limit) end
limit_cache[lane], default_limit, settings, has_own_limits = nil, nil, nil, nil -- read before the change (by expect_lane)
if lane ~= '' and redis.call('EXISTS', lane_prios(lane)) == 1 then
  redis.call('ZREM', P .. 'turns', lane)
  redis.call('ZREM', P .. 'later', lane)
  places[lane] = false
  if place_lane(lane, nil) then pcall(wake, 1, nil) end
end
return had

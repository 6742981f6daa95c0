-- Extend the leases a worker still holds (its heartbeat).
-- KEYS[1] - queue prefix (see _prelude.lua)
-- ARGV[1] - lease seconds
-- ARGV    - then pairs: task id, token
-- returns   the ids whose lease is no longer held by that token
local deadline = lease_score(clock() + tonumber(ARGV[1]))
local lost = {}
for i = 2, #ARGV, 2 do
  local held = redis.call('HGET', P .. 'inflight', ARGV[i])
  if held and inflight_fields(held) == ARGV[i + 1] then
    redis.call('ZADD', P .. 'leases', 'XX', deadline, ARGV[i])
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost

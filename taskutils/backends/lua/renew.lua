-- Extend the leases a worker still holds (its heartbeat, or a claim confirmed before it starts).
-- KEYS[1] - the queue's prefix P. Touches P .. inflight (read), leases
-- ARGV[1] - lease seconds
-- ARGV[2..] - pairs: seq, token
-- returns   the seqs whose lease that token no longer holds
refuse_when_full() -- Redis over maxmemory refuses the whole call (see _store.lua)
expect_keys('leases')
local deadline = lease_score(clock() + tonumber(ARGV[1]))
local lost = {}
for i = 2, #ARGV, 2 do
  local lease = redis.call('HGET', P .. 'inflight', ARGV[i])
  if lease and token_of(lease) == ARGV[i + 1] then
    redis.call('ZADD', P .. 'leases', 'XX', deadline, ARGV[i])
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost

-- Finish a task: done (ack) or failed for good; refused unless the token still holds the lease.
-- KEYS[1] - queue prefix (see _prelude.lua)
-- ARGV[1] - task id
-- ARGV[2] - token of the claim
-- ARGV[3] - outcome record (msgpack), kept as result:<id>
-- ARGV[4] - seconds to keep the outcome (0: not kept)
-- ARGV[5] - failure record (msgpack) for failed_info, or "" for success
-- returns   1, or 0 if the lease was no longer held (nothing changed)
local id = ARGV[1]
local level, envelope = release(id, ARGV[2])
if not level then return 0 end
local ttl = tonumber(ARGV[4])
if ttl > 0 then
  redis.call('SET', P .. 'result:' .. id, ARGV[3], 'PX', math.ceil(ttl * 1000))
end
if ARGV[5] ~= '' then
  redis.call('HSET', P .. 'failed', id, level .. '|' .. envelope)
  redis.call('HSET', P .. 'failed_info', id, ARGV[5])
end
if redis.call('EXISTS', P .. 'prios') == 1 then wake(1, clock()) end
return 1

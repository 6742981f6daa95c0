-- Drop unique values whose hold after their task ended has passed (_unique.lua), a few of the
-- 65,536 value hashes per call, going round them: each worker heartbeat sweeps some, so memory
-- is given back even for values nobody looks up again.
-- KEYS[1] - the queue's prefix P. Touches P .. up:*, config (field unique_sweep: the next hash)
-- ARGV[1] - how many hashes to sweep
-- returns   how many holds were dropped
refuse_when_full() -- Redis over maxmemory refuses the whole call (see _store.lua)
expect_keys('config')
local now, dropped = clock(), 0
local next_hash = tonumber(redis.call('HGET', P .. 'config', 'unique_sweep') or '0') or 0
for _ = 1, tonumber(ARGV[1]) do
  local key = P .. 'up:' .. string.format('%04x', next_hash % 65536)
  next_hash = (next_hash + 1) % 65536
  if redis.call('TYPE', key)['ok'] == 'hash' then
    local fields = redis.call('HGETALL', key)
    local gone = {}
    for i = 1, #fields, 2 do
      local bar = string.find(fields[i + 1], '|', 1, true)
      if bar and hold_end(fields[i + 1], bar) <= now then gone[#gone + 1] = fields[i] end
    end
    if #gone > 0 then
      call_in_chunks('HDEL', key, gone)
      dropped = dropped + #gone
    end
  end
end
redis.call('HSET', P .. 'config', 'unique_sweep', next_hash)
return dropped

-- A consumer stops being woken or handed tasks (it pauses or stops): drop its idle entry.
-- KEYS[1] - queue prefix (see _prelude.lua)
-- ARGV[1] - consumer id
-- returns   how many idle entries were dropped
local mine, dropped = ARGV[1] .. '|', 0
for _, member in ipairs(redis.call('ZRANGE', P .. 'idle', 0, -1)) do
  if string.sub(member, 1, #mine) == mine then
    dropped = dropped + redis.call('ZREM', P .. 'idle', member)
  end
end
return dropped

-- A consumer stops being woken or handed tasks (it pauses, stops, or stops waiting under this
-- name): drop its idle entry, and put back the tasks handed to it that it did not take.
-- KEYS[1] - queue prefix (see _prelude.lua)
-- ARGV[1] - consumer id
-- returns   how many idle entries were dropped
local mine, dropped = ARGV[1] .. '|', 0
for _, member in ipairs(redis.call('ZRANGE', P .. 'idle', 0, -1)) do
  if string.sub(member, 1, #mine) == mine then
    dropped = dropped + redis.call('ZREM', P .. 'idle', member)
  end
end
local returned = put_back_handed(ARGV[1])
if returned > 0 then wake(returned) end
return dropped

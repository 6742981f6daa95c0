-- Put a failed attempt back, now or after a delay; refused unless the token still holds the lease.
-- KEYS[1] - queue prefix (see _prelude.lua)
-- ARGV[1] - task id
-- ARGV[2] - token of the claim
-- ARGV[3] - delay seconds
-- returns   1, or 0 if the lease was no longer held (nothing changed)
local fields = release(ARGV[1], ARGV[2])
if not fields then return 0 end
local task = split(fields[3], 3)
local envelope = task[1] .. '|' .. (tonumber(task[2]) + 1) .. '|' .. task[3] .. '|' .. task[4]
local now, delay = clock(), tonumber(ARGV[3])
if delay > 0 then
  schedule(fields[2], envelope, now + delay, now)
else
  push_ready(fields[2], envelope)
  wake(1, now)
end
return 1

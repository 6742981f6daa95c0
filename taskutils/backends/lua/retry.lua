-- Put a failed attempt back, now or after a delay; refused unless the token still holds the lease.
-- KEYS[1] - queue prefix (see _prelude.lua)
-- ARGV[1] - task id
-- ARGV[2] - token of the claim
-- ARGV[3] - delay seconds
-- returns   1, or 0 if the lease was no longer held (nothing changed)
local level, held = release(ARGV[1], ARGV[2])
if not level then return 0 end
local id, failures, crashes, body = envelope_fields(held)
local envelope = envelope_of(id, failures + 1, crashes, body)
local now, delay = clock(), tonumber(ARGV[3])
if delay > 0 then
  schedule(level, envelope, now + delay, now)
else
  push_ready(level, envelope)
  wake(1, now)
end
return 1

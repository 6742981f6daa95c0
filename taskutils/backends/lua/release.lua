-- Hand a running task back at once, to the front of its level (its worker stops before it ended).
-- KEYS[1] - queue prefix (see _prelude.lua)
-- ARGV[1] - task id
-- ARGV[2] - token of the claim
-- returns   1, or 0 if the lease was no longer held (nothing changed)
local level, envelope = release(ARGV[1], ARGV[2])
if not level then return 0 end
push_ready(level, envelope, true)
wake(1, clock())
return 1

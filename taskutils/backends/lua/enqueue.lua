-- Enqueue tasks: ready ones to an idle consumer or onto their priority's list, delayed ones
-- into the schedule.
-- KEYS[1] - queue prefix (see _prelude.lua)
-- ARGV    - triples: priority, delay seconds, msgpack body
-- returns   the new task ids, in order
local now = nil -- the server's clock, read only when a delay needs it
local ids, ready = {}, 0
for i = 1, #ARGV, 3 do
  local id = new_id()
  local envelope = id .. '|0|0|' .. ARGV[i + 2]
  local delay = tonumber(ARGV[i + 1])
  if delay > 0 then
    now = now or clock()
    schedule(ARGV[i], envelope, now + delay, now)
  elseif not hand_off(ARGV[i], envelope) then
    push_ready(ARGV[i], envelope)
    ready = ready + 1
  end
  ids[#ids + 1] = id
end
if ready > 0 then wake(ready, now) end
return ids

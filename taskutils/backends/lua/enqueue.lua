-- Enqueue tasks: ready ones to idle consumers or onto their priority's list, delayed ones into
-- the schedule. Ids are taken in one INCRBY, and ready tasks are pushed with one call per key
-- for the whole call, so a bulk enqueue costs a few calls, not a few per task.
-- KEYS[1] - queue prefix (see _prelude.lua)
-- ARGV    - triples: priority, delay seconds, msgpack body
-- returns   the new task ids, in order
local now = nil -- the server's clock, read only when a delay needs it
local count = #ARGV / 3
local first = redis.call('INCRBY', P .. 'seq', count) - count

-- one task (one-by-one enqueue, the common case): no tables to build
if count == 1 then
  local id = id_of(first + 1)
  local envelope, delay = id .. '|0|0|' .. ARGV[3], tonumber(ARGV[2])
  if delay > 0 then
    now = clock()
    schedule(ARGV[1], envelope, now + delay, now)
  elseif not hand_off(ARGV[1], envelope) then
    push_ready(ARGV[1], envelope)
    wake(1)
  end
  return {id}
end

local ids, levels, by_level = {}, {}, {}
for k = 1, count do
  local i = (k - 1) * 3 + 1
  local id = id_of(first + k)
  local level, envelope, delay = ARGV[i], id .. '|0|0|' .. ARGV[i + 2], tonumber(ARGV[i + 1])
  if delay > 0 then
    now = now or clock()
    schedule(level, envelope, now + delay, now)
  else
    if not by_level[level] then
      by_level[level] = {}
      levels[#levels + 1] = level
    end
    table.insert(by_level[level], envelope)
  end
  ids[k] = id
end

-- highest priority first: idle consumers get the tasks they would have claimed, then the rest
-- goes onto the lists
table.sort(levels, function(a, b) return level_rank(a) < level_rank(b) end)
local handing, ready = true, 0
for _, level in ipairs(levels) do
  local envelopes, from = by_level[level], 1
  while handing and envelopes[from] do
    if hand_off(level, envelopes[from]) then from = from + 1 else handing = false end
  end
  if envelopes[from] then
    local rest = {}
    for k = from, #envelopes do rest[#rest + 1] = envelopes[k] end
    push_ready_many(level, rest)
    ready = ready + #rest
  end
end
if ready > 0 then wake(ready, now) end
return ids

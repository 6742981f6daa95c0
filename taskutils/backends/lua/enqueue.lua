-- Enqueue tasks: ready ones into their lanes (_lanes.lua), waking waiting consumers; delayed ones
-- into the schedule. Sequence numbers are taken in one INCRBY, and ready tasks are pushed with
-- one call per key for the whole call, so a bulk enqueue costs a few calls, not a few per task.
-- KEYS[1] - the queue's prefix P. Touches P .. epoch, seq, the lanes' keys, scheduled, state:*,
--           idle, wake (see _store.lua, _lanes.lua, _queue.lua)
-- ARGV    - groups of 4: level, delay seconds, key ("" for none), msgpack body
-- Every key written is checked before the first write (_store.lua): a key of the wrong type fails
-- the call with a WRONGTYPE error, and nothing is enqueued. Waking is best effort here: a broken
-- idle or wake key makes workers find the task by themselves (and report that key).
-- returns   {the queue's epoch, the sequence number before the first task's}: the tasks' ids are
--           <epoch>-<first + k in hex> for k = 1, 2, ...
refuse_when_full() -- Redis over maxmemory refuses the whole call (see _store.lua)
local count = #ARGV / 4
local first = new_seqs(count) -- seq and epoch fail here by themselves, before anything is written
for k = 1, count do
  local i = (k - 1) * 4 + 1
  if tonumber(ARGV[i + 1]) > 0 then expect_keys('scheduled') else expect_lane(ARGV[i + 2], ARGV[i]) end
end
for seq = first + 1, first + count, STATE_BUCKET do expect_buckets({hex(seq)}) end
expect_buckets({hex(first + count)})
local out = {epoch(), first}
local now = nil -- the server's clock, read only when needed

-- task k's envelope: a keyed task's body starts with "@<key>|"
local function new_envelope(k)
  local i = (k - 1) * 4 + 1
  local key, body = ARGV[i + 2], ARGV[i + 3]
  if key ~= '' then body = '@' .. key .. '|' .. body end
  return envelope_of(hex(first + k), 0, 0, body)
end

-- one task (one-by-one enqueue, the common case): no tables to build
if count == 1 then
  local delay = tonumber(ARGV[2])
  if delay > 0 then
    now = clock()
    schedule(ARGV[1], new_envelope(1), now + delay, now)
  elseif push_ready(ARGV[1], new_envelope(1), false, nil) then
    pcall(wake, 1)
  end
  return out
end

local groups, by_group, ready = {}, {}, 0
for k = 1, count do
  local i = (k - 1) * 4 + 1
  local level, delay, key = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  if delay > 0 then
    now = now or clock()
    schedule(level, new_envelope(k), now + delay, now)
  else
    local group = key .. '|' .. level -- levels have no "|": this names one lane's level
    if not by_group[group] then
      by_group[group] = {}
      groups[#groups + 1] = {key, level, group}
    end
    table.insert(by_group[group], new_envelope(k))
  end
end
for _, group in ipairs(groups) do
  local lane, level, envelopes = group[1], group[2], by_group[group[3]]
  if push_ready_many(lane, level, envelopes, now) then
    ready = ready + (lane == '' and #envelopes or 1)
  end
end
if ready > 0 then pcall(wake, ready, now) end
return out

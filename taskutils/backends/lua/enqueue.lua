-- Enqueue tasks: ready ones into their lanes (_lanes.lua), waking waiting consumers; delayed ones
-- into the schedule. A task with a unique value that another task holds (_unique.lua) is not
-- enqueued: its id is that task's. Sequence numbers are taken in one INCRBY, and ready tasks are
-- pushed with one call per key for the whole call, so a bulk enqueue costs a few calls, not a few
-- per task.
-- KEYS[1] - the queue's prefix P. Touches P .. epoch, seq, the lanes' keys, scheduled, state:*,
--           up:* (_unique.lua), idle, wake (see _store.lua, _lanes.lua, _queue.lua)
-- ARGV    - groups of 6: level, delay seconds, key ("" for none), the digest of the unique value
--           ("" for none: see _unique.lua), unique_for seconds, msgpack body
-- Every key written is checked before the first write (_store.lua): a key of the wrong type fails
-- the call with a WRONGTYPE error, and nothing is enqueued. Waking is best effort here: a broken
-- idle or wake key makes workers find the task by themselves (and report that key).
-- returns   {the queue's epoch, the sequence number before the first task's, then pairs k, seq}:
--           task k's id is <epoch>-<first + k in hex>, or <epoch>-<seq> when a pair names it
refuse_when_full() -- Redis over maxmemory refuses the whole call (see _store.lua)
local count = #ARGV / 6
-- the sequence numbers are taken (INCRBY) once everything is checked: until then nothing is written
local first = tonumber(read('GET', P .. 'seq')) or 0
local known_epoch = read('GET', P .. 'epoch')

-- the unique values are looked up first (the reads check their hashes): a task whose value is
-- held gets the holder's id (a pair k, seq in out) and is not looked at again; another takes the
-- value, and the keys it will write are checked
local now, holders, holds, taking, fresh = nil, {}, {}, {}, 0
for k = 1, count do
  local i = (k - 1) * 6 + 1
  local unique = ARGV[i + 3]
  if unique ~= '' then
    now = now or clock()
    holders[k] = taking[unique] or unique_holder(unique, now)
    if not holders[k] then
      taking[unique] = hex(first + k)
      holds[#holds + 1] = {unique, ARGV[i + 4], hex(first + k)}
    end
  end
  if not holders[k] then
    fresh = fresh + 1
    if tonumber(ARGV[i + 1]) > 0 then expect_keys('scheduled') else expect_lane(ARGV[i + 2], ARGV[i]) end
  end
end
if fresh > 0 then -- else every task's value is held (a crawler's links seen before): nothing is written
  for seq = first + 1, first + count, STATE_BUCKET do expect_buckets({hex(seq)}) end
  expect_buckets({hex(first + count)})
  new_seqs(count) -- the seqs read above; a seq key holding no count fails here, before any write
end
local out = {known_epoch or epoch(), first}
hold_unique(holds)

-- task k's envelope (a keyed task's body starts with "@<key>|"), or nil when its unique value is
-- held: then its id is the holder's
local function new_envelope(k)
  local i = (k - 1) * 6 + 1
  if holders[k] then
    out[#out + 1] = k
    out[#out + 1] = holders[k]
    return nil
  end
  local key, body = ARGV[i + 2], ARGV[i + 5]
  if key ~= '' then body = '@' .. key .. '|' .. body end
  return envelope_of(hex(first + k), 0, 0, body)
end

-- one task (one-by-one enqueue, the common case): no tables to build
if count == 1 then
  local delay, envelope = tonumber(ARGV[2]), new_envelope(1)
  if not envelope then return out end
  if delay > 0 then
    now = now or clock()
    schedule(ARGV[1], envelope, now + delay, now)
  elseif push_ready(ARGV[1], envelope, false, now) then
    pcall(wake, 1)
  end
  return out
end

local groups, by_group, ready = {}, {}, 0
for k = 1, count do
  local i = (k - 1) * 6 + 1
  local level, delay, key = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  local envelope = new_envelope(k)
  if envelope and delay > 0 then
    now = now or clock()
    schedule(level, envelope, now + delay, now)
  elseif envelope then
    local group = key .. '|' .. level -- levels have no "|": this names one lane's level
    if not by_group[group] then
      by_group[group] = {}
      groups[#groups + 1] = {key, level, group}
    end
    table.insert(by_group[group], envelope)
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

-- Purge part of a queue: up to PURGE_BATCH waiting tasks of one lane or of the schedule, dropped
-- for good. They keep no outcome (their ids become unknown); the unique values they held are let
-- go as a cancel lets them go (held on for unique_for). Running and failed tasks are not touched.
-- Called again until it returns 0 (redis_inspection.py purge), so no call runs long.
-- KEYS[1] - the queue's prefix P. Touches P .. prios, ready:<level>, kp:<K>, kq:<K>:<level>, turns,
--           later, kqueued, ks:<K>, kl:<K>, scheduled, state:*, cancel_q, cancel_s, up:* (_unique.lua)
-- ARGV[1] - "s" for the schedule, "" for the unkeyed lane, "@<K>" for the lane of key K
-- returns   {entries removed (0: that part is empty), tasks dropped (cancelled ones not counted)}
refuse_when_full() -- Redis over maxmemory refuses the whole call (see _store.lua)
local PURGE_BATCH = 1000
local part, seqs, removed, dropped = ARGV[1], {}, 0, nil
local function collect(envelopes)
  for _, envelope in ipairs(envelopes) do
    if is_envelope(envelope) then seqs[#seqs + 1] = seq_of(envelope) end
  end
  removed = removed + #envelopes
end

-- what goes is read first, and every key written is checked, before the first write
local marks, writes = 'cancel_q', {}
if part == 's' then
  marks = 'cancel_s'
  local members = read('ZRANGE', P .. 'scheduled', '0', tostring(PURGE_BATCH - 1))
  for _, member in ipairs(members) do collect({select(2, split_level(member))}) end
  writes[1] = function() if #members > 0 then call_in_chunks('ZREM', P .. 'scheduled', members) end end
else
  local lane = part == '' and '' or string.sub(part, 2)
  local levels = read('ZRANGE', lane_prios(lane), '0', '-1')
  local emptied = 0
  for _, level in ipairs(levels) do
    if removed >= PURGE_BATCH then break end
    local list = lane_list(lane, level)
    local envelopes = read('LRANGE', list, '0', tostring(PURGE_BATCH - removed - 1))
    local count = #envelopes
    collect(envelopes)
    local all = read('LLEN', list) == count
    if all then emptied = emptied + 1 end
    writes[#writes + 1] = function()
      if all then
        redis.call('DEL', list)
        redis.call('ZREM', lane_prios(lane), level)
      else
        redis.call('LTRIM', list, tostring(count), '-1')
      end
    end
  end
  expect_keys('turns', 'later')
  if lane ~= '' then expect_lane_end(lane) end
  writes[#writes + 1] = function()
    if lane ~= '' and removed > 0 then count_keyed(-removed) end
    if emptied == #levels then
      redis.call('ZREM', P .. 'turns', lane)
      redis.call('ZREM', P .. 'later', lane)
      if lane ~= '' then lane_idle(lane, clock()) end
    end
  end
end
expect_unique_release(seqs)
expect_buckets(seqs)
expect_keys(marks)
for _, write in ipairs(writes) do write() end
if #seqs > 0 then
  drop_states(seqs)
  if present(marks) then -- cancelled tasks were counted out already
    local unmarked = call_in_chunks('SREM', P .. marks, seqs)
    dropped = removed - (type(unmarked) == 'number' and unmarked or 0)
  end
  release_unique(clock())
end
return {removed, dropped or removed}

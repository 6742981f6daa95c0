-- Unique values of tasks (needs _prelude.lua, _store.lua): while a task with a unique value is
-- scheduled, queued or running, and for its unique_for seconds after it ends, enqueueing another
-- task with that value on the queue returns the first one's id instead.
--
-- A value is kept as its digest, which the caller computes: the first 24 hex digits (96 bits) of
-- its SHA-1, so a URL costs the same as a short word, and two of a billion values collide with
-- odds below 10^-10. Keys:
--   up:<d4>     HASH  digest[5..] -> "<seq>" for a value a pending task holds, "<seq>|<until>" (in
--               ms, ms_text) for one held after its task ended, for the digests starting with d4: 65,536 small
--               hashes, which Redis keeps as compact listpacks up to hash-max-listpack-entries
--               values each (about 8 million values in all). A hold whose time passed is replaced
--               when the value is next taken, or dropped by sweep_unique.lua (worker heartbeats).
--   state:<bucket>  the state buckets of _store.lua hold, beside a pending task's state (field
--               seq % 64), the record of the value it holds: field "u<seq % 64>" ->
--               "<unique_for>|<digest>". It is written with the task's first state and dropped with
--               its last (set_state, drop_states), so it costs no call of its own; a bucket then has
--               up to 128 fields, which Redis keeps as a listpack (hash-max-listpack-entries is 128
--               by default).

-- when the hold of "<seq>|<until>" ends, in seconds: until is in ms (ms_text), or in seconds if
-- the version before wrote it (any time below 10^11 ms, which was 1973)
local function hold_end(held, bar)
  local until_time = tonumber(string.sub(held, bar + 1)) or 0
  if until_time < 1e11 then return until_time end
  return until_time / 1000
end

-- a value's hash and field, from its digest
local function unique_place(digest)
  return P .. 'up:' .. string.sub(digest, 1, 4), string.sub(digest, 5)
end

-- the seq holding the value of `digest`, or nil if none does or its hold is over (the read
-- checks the value's hash; an enqueue overwrites a hold that is over)
local function unique_holder(digest, now)
  local place, field = unique_place(digest)
  local held = read('HGET', place, field)
  if not held then return nil end
  local bar = string.find(held, '|', 1, true)
  local seq = bar and string.sub(held, 1, bar - 1) or held
  if bar then
    if hold_end(held, bar) > now then return seq end -- held after its task ended
  else
    local bucket, slot = bucket_of(seq)
    local ok, pending_task = pcall(redis.call, 'HEXISTS', P .. 'state:' .. bucket, 'u' .. slot)
    if not ok or pending_task == 1 then return seq end -- a damaged bucket: the hold stands
  end
  return nil -- its time passed, or its task's record is gone (damaged by hand)
end

-- tasks hold values while they are pending, and unique_for seconds after they end: `holds` are
-- {digest, unique_for, seq}; each task's record goes with its first state (the caller sets it in
-- this call, and checked its state bucket)
local function hold_unique(holds)
  for _, hold in ipairs(holds) do
    local place, field = unique_place(hold[1])
    redis.call('HSET', place, field, hold[3])
    with_state[hold[3]] = {'u' .. select(2, bucket_of(hold[3])), hold[2] .. '|' .. hold[1]}
  end
end

-- the values pending tasks `seqs` hold: {unique_for, digest, seq} each (the reads check the
-- state buckets)
local function held_values(seqs)
  local groups, buckets = by_bucket(seqs)
  local held = {}
  for _, bucket in ipairs(buckets) do
    local slots, fields = groups[bucket], {}
    for k, slot in ipairs(slots) do fields[k] = 'u' .. slot end
    for k, text in ipairs(read('HMGET', P .. 'state:' .. bucket, unpack(fields))) do
      if text then
        local bar = string.find(text, '|', 1, true)
        local seq = hex(tonumber(bucket, 16) * STATE_BUCKET + tonumber(slots[k]))
        held[#held + 1] = {tonumber(string.sub(text, 1, bar - 1)) or 0, string.sub(text, bar + 1), seq}
      end
    end
  end
  return held
end

-- the values that tasks `seqs`, which end in this call, hold: read now, before the call writes
-- (which checks their keys), for release_unique
local releases = {}
on_call(function() releases = {} end)
local function expect_unique_release(seqs)
  for _, release in ipairs(held_values(seqs)) do
    release[4] = read('HGET', unique_place(release[2])) -- the value's holder now
    releases[#releases + 1] = release
  end
end

-- the tasks of expect_unique_release ended (done, failed for good, cancelled): they let their
-- values go, or keep them for their unique_for seconds (their records go with their states:
-- drop_states)
local function release_unique(now)
  for _, release in ipairs(releases) do
    local seconds, digest, seq, holder = unpack(release)
    local place, field = unique_place(digest)
    if holder == seq then
      if seconds > 0 then
        redis.call('HSET', place, field, seq .. '|' .. ms_text(now + seconds))
      else
        redis.call('HDEL', place, field)
      end
    end
  end
  releases = {}
end

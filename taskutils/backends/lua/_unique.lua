-- Unique values of tasks (needs _prelude.lua, _store.lua): while a task with a unique value is
-- scheduled, queued or running, and for its unique_for seconds after it ends, enqueueing another
-- task with that value on the queue returns the first one's id instead.
--
-- A value is kept as its digest, which the caller computes: the first 24 hex digits (96 bits) of
-- its SHA-1, so a URL costs the same as a short word, and two of a billion values collide with
-- odds below 10^-10. Keys:
--   up:<d4>     HASH  digest[5..] -> "<seq>" for a value a pending task holds, "<seq>|<until>" for
--               one held after its task ended, for the digests starting with d4: 65,536 small
--               hashes, which Redis keeps as compact listpacks up to hash-max-listpack-entries
--               values each (about 8 million values in all). A hold whose time passed is replaced
--               when the value is next taken, or dropped by sweep_unique.lua (worker heartbeats).
--   uo:<bucket> HASH  seq % 64 -> "<unique_for>|<digest>" of each pending task holding a value,
--               for seq // 64 == bucket (hex), as the state buckets of _store.lua

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
    if tonumber(string.sub(held, bar + 1)) > now then return seq end -- held after its task ended
  else
    local bucket, slot = bucket_of(seq)
    local ok, pending_task = pcall(redis.call, 'HEXISTS', P .. 'uo:' .. bucket, slot)
    if not ok or pending_task == 1 then return seq end -- a damaged bucket: the hold stands
  end
  return nil -- its time passed, or its task's record is gone (damaged by hand)
end

-- tasks hold values while they are pending, and unique_for seconds after they end: `holds` are
-- {digest, unique_for, seq} (the caller checked the uo buckets of the seqs with expect)
local function hold_unique(holds)
  local seqs, records = {}, {}
  for k, hold in ipairs(holds) do
    local place, field = unique_place(hold[1])
    redis.call('HSET', place, field, hold[3])
    seqs[k], records[k] = hold[3], hold[2] .. '|' .. hold[1]
  end
  local groups, buckets = by_bucket(seqs, records)
  for _, bucket in ipairs(buckets) do call_in_chunks('HSET', P .. 'uo:' .. bucket, groups[bucket]) end
end

-- the values pending tasks `seqs` hold: {uo key, slot, unique_for, digest, seq} each
local function held_values(seqs)
  local groups, buckets = by_bucket(seqs)
  local held = {}
  for _, bucket in ipairs(buckets) do
    local key = P .. 'uo:' .. bucket
    for k, text in ipairs(read('HMGET', key, unpack(groups[bucket]))) do
      if text then
        local bar = string.find(text, '|', 1, true)
        local seq = hex(tonumber(bucket, 16) * STATE_BUCKET + tonumber(groups[bucket][k]))
        held[#held + 1] = {key, groups[bucket][k], tonumber(string.sub(text, 1, bar - 1)) or 0,
          string.sub(text, bar + 1), seq}
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
    release[6] = read('HGET', unique_place(release[4])) -- the value's holder now
    releases[#releases + 1] = release
  end
end

-- the tasks of expect_unique_release ended (done, failed for good, cancelled): they let their
-- values go, or keep them for their unique_for seconds
local function release_unique(now)
  for _, release in ipairs(releases) do
    local key, slot, seconds, digest, seq, holder = unpack(release)
    local place, field = unique_place(digest)
    redis.call('HDEL', key, slot)
    if holder == seq then
      if seconds > 0 then
        redis.call('HSET', place, field, seq .. '|' .. string.format('%.17g', now + seconds))
      else
        redis.call('HDEL', place, field)
      end
    end
  end
  releases = {}
end

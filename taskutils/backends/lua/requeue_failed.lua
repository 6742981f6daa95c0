-- Move tasks from the failed store back to the queue, with their attempts counted afresh.
-- KEYS[1] - the queue's prefix P. Touches P .. epoch, failed, failed_info, outcome:*, the lanes'
--           keys (_lanes.lua), state:*, idle, wake, config, leases, seq
-- ARGV    - seqs
-- returns   the seqs that were in the failed store and are queued again
refuse_when_full() -- Redis over maxmemory refuses the whole call (see _store.lua)
expect_keys('failed', 'failed_info')
local requeued, entries = {}, {}
for k, seq in ipairs(ARGV) do
  entries[k] = redis.call('HGET', P .. 'failed', seq)
  if entries[k] then
    local level, rest = split_level(entries[k])
    expect_lane(lane_of(checked(rest)), level)
    expect_buckets({seq}, true)
  end
end
local seen = {}
for k, seq in ipairs(ARGV) do
  if entries[k] and not seen[seq] then
    seen[seq] = true
    local level, rest = split_level(entries[k])
    local _, _, _, body = envelope_fields(checked(rest))
    push_ready(level, envelope_of(seq, 0, 0, body), false, nil)
    redis.call('HDEL', P .. 'failed', seq)
    redis.call('HDEL', P .. 'failed_info', seq)
    drop_outcome(seq)
    requeued[#requeued + 1] = seq
  end
end
pcall(wake_for_ready, nil)
return requeued

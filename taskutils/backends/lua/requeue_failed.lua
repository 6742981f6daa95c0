-- Move tasks from the failed store back to the queue, with their attempts counted afresh.
-- KEYS[1] - the queue's prefix P. Touches P .. epoch, failed, failed_info, outcome:*, ready:*,
--           prios, state:*, idle, wake, config, leases, seq
-- ARGV    - seqs
-- returns   the seqs that were in the failed store and are queued again
local requeued = {}
for _, seq in ipairs(ARGV) do
  local entry = redis.call('HGET', P .. 'failed', seq)
  if entry then
    local level, rest = split_level(entry)
    local _, _, _, body = envelope_fields(checked(rest))
    push_ready(level, envelope_of(seq, 0, 0, body))
    redis.call('HDEL', P .. 'failed', seq)
    redis.call('HDEL', P .. 'failed_info', seq)
    drop_outcome(seq)
    requeued[#requeued + 1] = seq
  end
end
wake_for_ready(nil)
return requeued

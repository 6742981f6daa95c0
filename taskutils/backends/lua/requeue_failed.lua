-- Move tasks from the failed store back to the queue, with their attempts counted afresh.
-- KEYS[1] - queue prefix (see _prelude.lua)
-- ARGV    - task ids
-- returns   the ids that were in the failed store and are queued again
local now, requeued = clock(), {}
for _, id in ipairs(ARGV) do
  local entry = redis.call('HGET', P .. 'failed', id)
  if entry then
    local level, envelope = level_and_envelope(entry)
    local task_id, _, _, body = envelope_fields(envelope)
    push_ready(level, envelope_of(task_id, 0, 0, body))
    redis.call('HDEL', P .. 'failed', id)
    redis.call('HDEL', P .. 'failed_info', id)
    redis.call('DEL', P .. 'result:' .. task_id)
    requeued[#requeued + 1] = task_id
  end
end
if #requeued > 0 then wake(#requeued, now) end
return requeued

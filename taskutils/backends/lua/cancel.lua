-- Cancel a task. A scheduled or queued task ends at once (its outcome: cancelled); it stays in its
-- list or the schedule, marked in P..'cancel_q' or P..'cancel_s', until a claim or the schedule
-- meets it and drops it there (finding it now would mean scanning its list). A running task only
-- has P..'cancel_run' set for it, for the function to check (current_task().cancelled); its
-- lease's end clears it.
-- KEYS[1] - the queue's prefix P. Touches P .. state:*, inflight, outcome:*, cancel_q, cancel_s, cancel_run,
--           and the unique values of the task (_unique.lua)
-- ARGV[1] - the epoch of the task's id
-- ARGV[2] - the task's seq
-- ARGV[3] - seconds to keep the outcome
-- ARGV[4] - the outcome record
-- returns   1 if the task was scheduled or queued and is cancelled now, else 0 (also for an id of
--           another epoch of the queue: see status.lua)
refuse_when_full() -- Redis over maxmemory refuses the whole call (see _store.lua)
if read('GET', P .. 'epoch') ~= ARGV[1] then return 0 end
local seq = ARGV[2]
local bucket, field = bucket_of(seq)
expect_unique_release({seq}) -- its read checks the state bucket
expect_buckets({seq}, true)
expect_keys('cancel_q', 'cancel_s', 'cancel_run')
if read('HEXISTS', P .. 'inflight', seq) == 1 then -- running (its state bucket keeps what it was before)
  redis.call('SADD', P .. 'cancel_run', seq)
  return 0
end
local state = redis.call('HGET', P .. 'state:' .. bucket, field)
if state ~= 'q' and state ~= 's' then return 0 end
redis.call('SADD', P .. (state == 'q' and 'cancel_q' or 'cancel_s'), seq)
drop_states({seq})
keep_outcomes({seq}, {ARGV[4]}, tonumber(ARGV[3]))
release_unique(clock())
return 1

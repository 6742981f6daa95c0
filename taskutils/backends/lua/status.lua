-- The state and outcome of one task.
-- KEYS[1] - the queue's prefix P. Touches P .. epoch, state:<bucket>, outcome:<bucket> (reads only)
-- ARGV[1] - the epoch of the task's id
-- ARGV[2] - the task's seq
-- returns   {state "s"/"q"/"r" or false, outcome or false}; both false when the id is not of the
--           queue's current epoch (a queue Redis lost and that was made again)
if redis.call('GET', P .. 'epoch') ~= ARGV[1] then return {false, false} end
local bucket, field = bucket_of(ARGV[2])
return {redis.call('HGET', P .. 'state:' .. bucket, field), redis.call('HGET', P .. 'outcome:' .. bucket, field)}

-- The state and outcome of one task.
-- KEYS[1] - the queue's prefix P. Touches P .. epoch, state:<bucket>, inflight, outcome:<bucket> (reads only)
-- ARGV[1] - the epoch of the task's id
-- ARGV[2] - the task's seq
-- returns   {state "s"/"q"/"r" or false, outcome or false}; both false when the id is not of the
--           queue's current epoch (a queue Redis lost and that was made again). A task is running
--           ("r") while it has a lease (inflight); its state bucket keeps what it was before.
if redis.call('GET', P .. 'epoch') ~= ARGV[1] then return {false, false} end
local bucket, field = bucket_of(ARGV[2])
local state = redis.call('HGET', P .. 'state:' .. bucket, field)
local ok, running = pcall(redis.call, 'HEXISTS', P .. 'inflight', ARGV[2]) -- a damaged inflight: exchanges report it
if ok and running == 1 then state = 'r' end
return {state, redis.call('HGET', P .. 'outcome:' .. bucket, field)}

-- Enqueue tasks (_enqueue.lua), waking waiting consumers.
-- KEYS[1] - the queue's prefix P. Touches P .. epoch, seq, the lanes' keys, scheduled, state:*,
--           up:* (_unique.lua), idle, wake (see _store.lua, _lanes.lua, _queue.lua)
-- ARGV    - groups of 6, one per task: level, delay seconds, key ("" for none), the digest of the
--           unique value ("" for none: see _unique.lua), unique_for seconds, msgpack body
-- Every key written is checked before the first write (_store.lua): a key of the wrong type fails
-- the call with a WRONGTYPE error, and nothing is enqueued. Waking is best effort here: a broken
-- idle or wake key makes workers find the task by themselves (and report that key).
-- returns   {the queue's epoch, the sequence number before the first task's, then pairs k, seq}:
--           task k's id is <epoch>-<first + k in hex>, or <epoch>-<seq> when a pair names it
refuse_when_full() -- Redis over maxmemory refuses the whole call (see _store.lua)
local starts = {}
for i = 1, #ARGV, 6 do starts[#starts + 1] = i end
return apply_enqueue(plan_enqueue(starts, nil), true)

-- One round trip of a worker on one queue: settle the claims it finished, then claim more.
-- KEYS[1] - the queue's prefix P. Touches P .. inflight, leases, state:*, outcome:*, failed,
--           failed_info, the lanes' keys, scheduled, rec, rec:*, config, idle, wake, epoch, seq
--           hist:<hour> (see _settle.lua, _claim.lua, _lanes.lua, _queue.lua)
-- ARGV[1] - consumer id
-- ARGV[2] - most tasks to claim (0: settle only)
-- ARGV[3] - lease seconds (the visibility timeout)
-- ARGV[4] - seconds the consumer waits for new work if it gets none
-- ARGV[5] - seconds to keep outcomes (0: none are kept)
-- ARGV[6] - a nonce from the consumer (8 characters that name it, then random ones): the leases of
--           this call get tokens "<nonce>.<k>"
-- ARGV[7] - the worker's per-minute counts for the history, or "" (add_tally in _settle.lua)
-- ARGV[8] - the number of settlements
-- ARGV[9..] - the settlements, groups of 6 (see _settle.lua), then their follow-up tasks (groups
--           of 6, see _enqueue.lua), in settlement order: a done settlement's follow-ups are
--           enqueued in this call if it applies, and it applies only if they can be (a key of the
--           wrong type refuses them: the settlement is then not applied, and its flag says "e")
-- Each step checks the keys it writes before its first write (_store.lua): a key of the wrong
-- type fails the call with a WRONGTYPE error, and what earlier steps did is whole. Waking others
-- is best effort (_queue.lua).
-- returns   {applied: "1"/"0"/"e" per settlement as one string, then "\n" and the reason of an
--            "e", the queue's epoch, capped 1/0,
--            seconds to the next due time or "-1" (when nothing was claimed), paused 1/0 (pause.lua),
--            token1, envelope1, ...}
refuse_when_full() -- Redis over maxmemory refuses the whole call (see _store.lua)
note_absent('cancel_q', 'cancel_s', 'cancel_run', 'scheduled', 'rec', 'limits') -- often none of them exists
local now, queue_epoch = clock(), epoch()
local settlements = tonumber(ARGV[8])
local seqs, leases = settling_leases(9, settlements)
local starts, owners = follow_ups(9, settlements, leases)
local skip, plan, refusal = {}, nil, nil
if #starts > 0 then
  local planned, result = pcall(plan_enqueue, starts, now)
  if planned then plan = result else skip, refusal = owners, error_text(result) end
end
local out = {settle(9, seqs, leases, skip, now, tonumber(ARGV[5])), queue_epoch, 0, '-1', 0}
if plan then apply_enqueue(plan, false) end -- made ready before the claim: it may take them; others are woken below
if refusal then out[1] = out[1] .. '\n' .. refusal end
local want = tonumber(ARGV[2])
local nothing_startable = false
if want > 0 then
  local claimed
  claimed, nothing_startable = claim(ARGV[1], want, tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[6], now)
  out[3], out[4], out[5] = claimed[1], claimed[2], claimed[3]
  for i = 4, #claimed do out[#out + 1] = claimed[i] end
end
-- for the slots it freed and the work it made ready but did not take (none if the claim left no
-- lane in the turns)
if not nothing_startable then pcall(wake_for_ready, now) end
-- a follow-up's lane now waits for the earliest time: a waiting consumer must wait for that time
-- instead, unless this consumer will (it got fewer claims than it asked for: its reply says when)
if plan and plan.later_first and (want == 0 or (#out - 5) / 2 >= want) then pcall(wake, 1, now) end
if ARGV[7] ~= '' then pcall(add_tally, ARGV[7]) end
return out

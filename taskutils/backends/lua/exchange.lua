-- One round trip of a worker: settle the tasks it finished, then claim up to `want` more.
-- KEYS[1] - queue prefix (see _prelude.lua)
-- ARGV[1] - consumer id
-- ARGV[2] - most tasks to claim (0: settle only)
-- ARGV[3] - lease seconds (the visibility timeout)
-- ARGV[4] - seconds the consumer will block in wait() if it gets nothing
-- ARGV[5] - seconds to keep outcomes (0: not kept)
-- ARGV    - then groups of 5 per settlement: kind, task id, token, data, failure record
--           kind "d" done (data: outcome), "f" failed for good (data: outcome; record),
--           "r" retry (data: delay seconds), "b" hand back (data unused)
-- returns   {applied: one "1"/"0" per settlement, as one string;
--            then what claim() returns (see _claim.lua)}
local now = clock()
local applied = settle(6, now, tonumber(ARGV[5]))
local want = tonumber(ARGV[2])
local out = {applied}
if want > 0 then
  for _, item in ipairs(claim(ARGV[1], want, tonumber(ARGV[3]), tonumber(ARGV[4]), now)) do
    out[#out + 1] = item
  end
end
-- freed slots or work put back may let idle consumers take something
if string.find(applied, '1', 1, true) and redis.call('EXISTS', P .. 'prios') == 1 then wake(#applied, now) end
return out

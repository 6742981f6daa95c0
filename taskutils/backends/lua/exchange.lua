-- One round trip of a worker: settle the tasks it finished, then claim up to `want` more.
-- KEYS[1] - queue prefix (see _prelude.lua)
-- ARGV[1] - consumer id
-- ARGV[2] - most tasks to claim into free slots (0: settle only)
-- ARGV[3] - lease seconds (the visibility timeout)
-- ARGV[4] - seconds the consumer will block in wait() if it gets nothing
-- ARGV[5] - seconds to keep outcomes (0: not kept)
-- ARGV[6] - most tasks to claim ahead on a capped queue (see claim() in _claim.lua)
-- ARGV[7] - "<id>:<token>" of each claim held ahead that the consumer started in the slot of a
--           task it settles in this call, space-separated: the cap counts them from now on, if
--           that token still holds the lease
-- ARGV    - then groups of 5 per settlement: kind, task id, token, data, failure record
--           kind "d" done (data: outcome), "f" failed for good (data: outcome; record),
--           "r" retry (data: delay seconds), "b" hand back (data unused)
-- returns   {applied: one "1"/"0" per settlement, as one string;
--            then what claim() returns (see _claim.lua)}
local now = clock()
local passed = {}
if ARGV[7] ~= '' and redis.call('EXISTS', P .. 'ahead') == 1 then
  local ids, tokens = {}, {}
  for id, token in string.gmatch(ARGV[7], '(%x+):(%d+)') do
    ids[#ids + 1], tokens[#tokens + 1] = id, token
  end
  local ahead = redis.call('SMISMEMBER', P .. 'ahead', unpack(ids))
  local held = redis.call('HMGET', P .. 'inflight', unpack(ids))
  for k, id in ipairs(ids) do -- else its lease ended: it is no longer this consumer's claim
    if ahead[k] == 1 and held[k] and inflight_fields(held[k]) == tokens[k] then passed[#passed + 1] = id end
  end
  if #passed > 0 then call_in_chunks('SREM', P .. 'ahead', passed) end
  set_states(passed, 'r')
end
local applied = settle(8, now, tonumber(ARGV[5]))
local want, ahead = tonumber(ARGV[2]), tonumber(ARGV[6])
local out = {applied}
if want > 0 or ahead > 0 then
  for _, item in ipairs(claim(ARGV[1], want, ahead, tonumber(ARGV[3]), tonumber(ARGV[4]), now)) do
    out[#out + 1] = item
  end
end
-- freed slots (less those passed on) or work put back may let idle consumers take something
if #applied > #passed and string.find(applied, '1', 1, true) and redis.call('EXISTS', P .. 'prios') == 1 then
  wake(#applied - #passed, now)
end
return out

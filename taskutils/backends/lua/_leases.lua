-- Leases: the one place that makes them and the one place that ends them (needs _prelude.lua,
-- _store.lua, _lanes.lua).
--
-- Keys: P..'leases' (ZSET seq -> deadline in ms: the running tasks, which the concurrency cap
-- counts), P..'inflight' (HASH seq -> lease value, see _prelude.lua), P..'cancel_run' (SET of
-- running tasks asked to stop, cancel.lua), the state buckets.
-- A task is running exactly while it has a lease; its token is unique to that lease. A keyed
-- task's lease holds one of its key's slots (ks:<K> run, _lanes.lua) for as long.

-- lease claimed tasks until `deadline`: entries are {seq, token, level, envelope}; one call per key
local function make_leases(entries, deadline)
  if #entries == 0 then return end
  local scores, values, score = {}, {}, lease_score(deadline)
  for _, entry in ipairs(entries) do
    scores[#scores + 1] = score
    scores[#scores + 1] = entry[1]
    values[#values + 1] = entry[1]
    values[#values + 1] = entry[2] .. '|' .. entry[3] .. '|' .. entry[4]
  end
  call_in_chunks('ZADD', P .. 'leases', scores)
  call_in_chunks('HSET', P .. 'inflight', values)
end

-- end the leases of seqs (their state is set by whatever comes next: ready, scheduled, finished),
-- and free the key slots they held: `lanes` has the lane of each keyed one (the caller checked
-- its keys with expect_lane)
local function end_leases(seqs, lanes, now)
  if #seqs == 0 then return end
  call_in_chunks('HDEL', P .. 'inflight', seqs)
  call_in_chunks('ZREM', P .. 'leases', seqs)
  if present('cancel_run') then call_in_chunks('SREM', P .. 'cancel_run', seqs) end
  for _, lane in ipairs(lanes) do lane_released(lane, now) end
end

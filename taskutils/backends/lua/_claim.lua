-- Claiming (needs _prelude.lua, _store.lua, _lanes.lua, _queue.lua, _leases.lua, _recurrent.lua), in
-- four named steps: promote due delayed tasks, fire due recurrent runs, put back the tasks of
-- expired leases, take ready tasks lane by lane, in turns.
--
-- Keys: P..'scheduled', those of _recurrent.lua, P..'leases', P..'inflight', the lanes' keys
-- (_lanes.lua), P..'cancel_q', P..'cancel_s', P..'config', P..'idle', P..'wake', P..'epoch',
-- P..'seq', the state buckets.

-- the items whose task was cancelled while it waited (cancel.lua); returns the others and the
-- seqs of the cancelled ones. Items are envelopes, or with `scheduled` "<level>|<envelope>"
-- members of the schedule: those cancelled are removed from it and from `marks` at once (a
-- claim takes the others out of their list and `marks` together, in its writing step).
local function drop_cancelled(items, marks, scheduled)
  local seqs, kept, gone = {}, {}, {}
  for k, item in ipairs(items) do
    local envelope = item
    if scheduled then envelope = select(2, split_level(item)) end
    seqs[k] = is_envelope(envelope) and seq_of(envelope) or ''
  end
  local marked = redis.call('SMISMEMBER', P .. marks, unpack(seqs))
  for k, item in ipairs(items) do
    if marked[k] == 1 then
      gone[#gone + 1] = seqs[k]
      if scheduled then redis.call('ZREM', P .. 'scheduled', item) end
    else
      kept[#kept + 1] = item
    end
  end
  if scheduled and #gone > 0 then redis.call('SREM', P .. marks, unpack(gone)) end
  return kept, gone
end

-- delayed tasks that are due become ready (at most 1000 per call)
local function promote_due_delayed(now)
  local due = redis.call('ZRANGEBYSCORE', P .. 'scheduled', '-inf', now, 'LIMIT', 0, 1000)
  local ready = {}
  if #due > 0 and redis.call('EXISTS', P .. 'cancel_s') == 1 then due = drop_cancelled(due, 'cancel_s', true) end
  for k, member in ipairs(due) do
    local level, rest = split_level(member)
    ready[k] = {level, checked(rest)}
    expect_lane(lane_of(ready[k][2]), level)
    expect_buckets({seq_of(ready[k][2])})
  end
  for k, member in ipairs(due) do
    push_ready(ready[k][1], ready[k][2], false, now)
    redis.call('ZREM', P .. 'scheduled', member)
  end
end

-- tasks whose lease expired (their worker died or stalled) go back to the front of their level,
-- in their order, with one more crash counted (at most 1000 per call)
local function requeue_expired_leases(now)
  local expired = redis.call('ZRANGEBYSCORE', P .. 'leases', '-inf', lease_score(now), 'LIMIT', 0, 1000)
  if #expired == 0 then return end
  expect_keys('cancel_run')
  local leases = redis.call('HMGET', P .. 'inflight', unpack(expired))
  local back, lanes = {}, {}
  for k = 1, #expired do
    expect_buckets({expired[k]})
    if leases[k] then
      local _, level, envelope = lease_fields(leases[k])
      back[k] = {level, checked(envelope)}
      local lane = lane_of(back[k][2])
      expect_lane(lane, level)
      expect_buckets({seq_of(back[k][2])})
      if holds_slot(token_of(leases[k])) and back[k][2] == envelope then lanes[#lanes + 1] = lane end
    end
  end
  end_leases(expired, lanes, now)
  local orphans = {} -- a lease with no task (damaged by hand): its state goes
  for k = #expired, 1, -1 do -- each to the front: the last first
    local seq = nil
    if back[k] then
      local failures, crashes, body
      seq, failures, crashes, body = envelope_fields(back[k][2])
      push_ready(back[k][1], envelope_of(seq, failures, crashes + 1, body), true, now)
    end
    if seq ~= expired[k] then orphans[#orphans + 1] = expired[k] end
  end
  drop_states(orphans)
end

-- lease up to `limit` ready tasks of one lane until `deadline`, by priority, FIFO within one,
-- with tokens <nonce>.<n> (n counts on from out's length; marked when `counted`: each holds a
-- slot of its key, see holds_slot); appends token, envelope pairs to out and returns how many.
-- The heads of the lists are read and their keys checked first, then trimmed: nothing is taken
-- that could not be leased. `taken` holds the seqs taken by this call.
local function take_from_lane(lane, limit, deadline, nonce, out, taken, counted)
  local batches, count, cancelled = {}, 0, {}
  local prios = lane_prios(lane)
  for _, top in ipairs(redis.call('ZRANGE', prios, 0, -1)) do
    if count >= limit then break end
    local key = lane_list(lane, top)
    local items = redis.call('LRANGE', key, 0, math.min(limit - count, 500) - 1)
    local read, seqs = #items, {}
    if read > 0 and redis.call('EXISTS', P .. 'cancel_q') == 1 then
      local gone
      items, gone = drop_cancelled(items, 'cancel_q', false)
      for _, seq in ipairs(gone) do cancelled[#cancelled + 1] = seq end
    end
    for k, item in ipairs(items) do
      items[k] = checked(item)
      seqs[k] = seq_of(items[k])
    end
    if #items > 0 then
      local held = redis.call('HMGET', P .. 'inflight', unpack(seqs))
      local failed = redis.call('HMGET', P .. 'failed', unpack(seqs))
      for k = 1, #items do
        if held[k] or failed[k] or taken[seqs[k]] then
          -- a sequence number already in use (a forged or copied envelope): a new one, losing neither
          local _, failures, crashes, body = envelope_fields(items[k])
          seqs[k] = hex(new_seqs(1) + 1)
          items[k] = envelope_of(seqs[k], failures, crashes, body)
        end
        taken[seqs[k]] = true
      end
      expect_buckets(seqs)
    end
    -- a list no enqueue made (an invalid level): its items count as priority 0
    batches[#batches + 1] = {key, top, valid_level(top) and top or '0', items, seqs, read}
    count = count + #items
  end
  local entries = {}
  for _, batch in ipairs(batches) do
    local key, top, level, items, seqs, read = batch[1], batch[2], batch[3], batch[4], batch[5], batch[6]
    if read > 0 then redis.call('LTRIM', key, read, -1) end
    if redis.call('EXISTS', key) == 0 then redis.call('ZREM', prios, top) end
    for k = 1, #items do
      local token = nonce .. '.' .. ((#out - 2) / 2 + 1) .. (counted and SLOT_MARK or '')
      entries[#entries + 1] = {seqs[k], token, level, items[k]}
      out[#out + 1] = token
      out[#out + 1] = items[k]
    end
  end
  make_leases(entries, deadline)
  if #cancelled > 0 then redis.call('SREM', P .. 'cancel_q', unpack(cancelled)) end
  if lane ~= '' and #entries + #cancelled > 0 then redis.call('DECRBY', P .. 'kqueued', #entries + #cancelled) end
  return #entries
end

-- one turn of a lane: take what its limits allow (as many as wanted, up to `room`, when `alone`
-- and it has no limit; else one), then put it back where it belongs; returns how many it took
local function serve_lane(lane, alone, room, deadline, nonce, out, taken, now)
  local limit, allowed = limit_of(lane), 1
  if alone and not limit then allowed = room end
  if lane ~= '' then
    expect_lane(lane, '0')
    local at = next_start(lane, limit)
    if at == nil or at > now then allowed = 0 end
  end
  local got = 0
  if allowed > 0 then
    local counted = lane ~= '' and limit ~= false -- a key with a limit: its tasks hold its slots
    got = take_from_lane(lane, allowed, deadline, nonce, out, taken, counted)
    if counted and got > 0 then lane_started(lane, limit, got, now) end
  end
  after_turn(lane, now)
  return got
end

-- take up to `limit` ready tasks, lane by lane in turns (_lanes.lua). A lane whose keys are
-- broken (the wrong type) fails only its own turn, before writing anything, and waits a second
-- before it is tried again: the other lanes go on. The error is raised if nothing could be taken.
local function take_ready(limit, deadline, nonce, out, now)
  promote_later(now)
  if redis.call('EXISTS', P .. 'prios') == 1 then place_lane('', now) end -- unkeyed work stored before lanes
  local count, taken, broken = 0, {}, nil
  while count < limit do
    local heads = redis.call('ZRANGE', P .. 'turns', 0, 1)
    local lane = heads[1]
    if not lane then break end
    local ok, got = pcall(serve_lane, lane, #heads == 1, limit - count, deadline, nonce, out, taken, now)
    if ok then
      count = count + got
    else
      broken = type(got) == 'table' and got.err or tostring(got) -- redis.call's errors come as text
      redis.call('ZREM', P .. 'turns', lane)
      redis.call('ZADD', P .. 'later', now + 1, lane)
    end
  end
  if broken and count == 0 then error({err = broken}) end
  return count
end

-- seconds until the first delayed task, recurrent run, lease deadline or lane's time, or "-1" if
-- none: how long a consumer that got nothing may wait
local function seconds_to_next_due(now)
  local next_due = nil
  for _, key in ipairs({'scheduled', 'rec', 'leases', 'later'}) do
    local first = tonumber(redis.call('ZRANGE', P .. key, 0, 0, 'WITHSCORES')[2])
    if first and key == 'leases' then first = first / 1000 end
    if first == math.huge then first = nil end -- a cron schedule waiting for more times
    if first and (next_due == nil or first < next_due) then next_due = first end
  end
  if next_due then return tostring(math.max(next_due - now, 0)) end
  return '-1'
end

-- promote due work, then claim up to `want` ready tasks for `consumer` within the cap.
-- A consumer that got fewer than it asked for took all it could: it is entered in `idle` until
-- now + idle_for (it waits for new work next), and told the next due time; when it got nothing,
-- the wake tokens left over are dropped too: it just found that nothing ready could start.
-- Returns {capped 1/0 (a concurrency cap or key limits), seconds to the next due time or "-1",
-- token1, envelope1, ...}
local function claim(consumer, want, lease, idle_for, nonce, now)
  local asked = want
  pcall(redis.call, 'ZREM', P .. 'idle', consumer)
  expect_keys('cancel_q', 'cancel_s')
  promote_due_delayed(now)
  fire_due_recurrent(now)
  requeue_expired_leases(now)
  local out = {0, '-1'}
  local free = free_slots()
  if free then
    out[1] = 1
    want = math.min(want, free)
  end
  -- limits on keys count as a cap too: a claim should start when it is made, not wait in a
  -- worker's prefetch while its key's next start comes due
  if redis.call('EXISTS', P .. 'limits') == 1 or redis.call('HEXISTS', P .. 'config', 'default_limit') == 1 then
    out[1] = 1
  end
  expect_keys('leases', 'inflight', 'turns', 'later')
  local taken = take_ready(want, now + lease, nonce, out, now)
  if taken < asked then
    pcall(redis.call, 'ZADD', P .. 'idle', now + idle_for, consumer) -- best effort, as waking is
    if taken == 0 then redis.call('DEL', P .. 'wake') end
    out[2] = seconds_to_next_due(now)
  end
  return out
end

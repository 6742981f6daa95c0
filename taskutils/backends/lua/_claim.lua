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
  if not due_by('scheduled', now) then return end
  local due = read('ZRANGEBYSCORE', P .. 'scheduled', '-inf', now, 'LIMIT', '0', '1000')
  local ready = {}
  if #due > 0 and present('cancel_s') then due = drop_cancelled(due, 'cancel_s', true) end
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
  if not due_by('leases', tonumber(lease_score(now))) then return end
  local expired = read('ZRANGEBYSCORE', P .. 'leases', '-inf', lease_score(now), 'LIMIT', '0', '1000')
  if #expired == 0 then return end
  expect_keys('cancel_run')
  local leases = read('HMGET', P .. 'inflight', unpack(expired))
  local back, lanes = {}, {}
  for k = 1, #expired do
    expect_buckets({expired[k]})
    if leases[k] then
      local _, level, envelope = lease_fields(leases[k])
      back[k] = {level, checked(envelope)}
      local lane = lane_of(back[k][2])
      expect_lane(lane, level)
      expect_buckets({seq_of(back[k][2])})
      if holds_slot(token_of(leases[k])) and back[k][2] == envelope then
        expect_lane_end(lane)
        lanes[#lanes + 1] = lane
      end
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
-- slot of its key, see holds_slot); appends token, envelope pairs to out and returns how many,
-- and whether the lane has ready tasks left. The heads of the lists are read (one item more than
-- wanted tells whether a list empties) and their keys checked first, then trimmed: nothing is
-- taken that could not be leased. `taken` holds the seqs taken by this call.
local function take_from_lane(lane, limit, deadline, nonce, out, taken, counted)
  local batches, count, cancelled, left = {}, 0, {}, false
  local prios = lane_prios(lane)
  for _, top in ipairs(read('ZRANGE', prios, '0', '-1')) do
    if count >= limit then
      left = true
      break
    end
    local key, wanted = lane_list(lane, top), math.min(limit - count, 500)
    local items = read('LRANGE', key, '0', wanted)
    local emptied = #items <= wanted
    if not emptied then items[#items] = nil end
    local got, seqs = #items, {}
    left = left or not emptied
    if got > 0 and present('cancel_q') then
      local gone
      items, gone = drop_cancelled(items, 'cancel_q', false)
      for _, seq in ipairs(gone) do cancelled[#cancelled + 1] = seq end
    end
    for k, item in ipairs(items) do
      items[k] = checked(item)
      seqs[k] = seq_of(items[k])
    end
    if #items > 0 then
      local held = read('HMGET', P .. 'inflight', unpack(seqs))
      local failed = read('HMGET', P .. 'failed', unpack(seqs))
      for k = 1, #items do
        if held[k] or failed[k] or taken[seqs[k]] then
          -- a sequence number already in use (a forged or copied envelope): a new one, losing neither
          local _, failures, crashes, body = envelope_fields(items[k])
          seqs[k] = hex(new_seqs(1) + 1)
          items[k] = envelope_of(seqs[k], failures, crashes, body)
        end
        taken[seqs[k]] = true
      end
    end
    -- a list no enqueue made (an invalid level): its items count as priority 0
    batches[#batches + 1] = {key, top, valid_level(top) and top or '0', items, seqs, got, emptied}
    count = count + #items
  end
  local entries = {}
  for _, batch in ipairs(batches) do
    local key, top, level, items, seqs, got, emptied = unpack(batch)
    if got > 0 then redis.call('LTRIM', key, got, '-1') end
    if emptied then
      redis.call('ZREM', prios, top)
      listed_levels[prios .. '|' .. top] = false
    end
    for k = 1, #items do
      local token = nonce .. '.' .. ((#out - 3) / 2 + 1) .. (counted and SLOT_MARK or '')
      entries[#entries + 1] = {seqs[k], token, level, items[k]}
      out[#out + 1] = token
      out[#out + 1] = items[k]
    end
  end
  make_leases(entries, deadline)
  if #cancelled > 0 then redis.call('SREM', P .. 'cancel_q', unpack(cancelled)) end
  if lane ~= '' and #entries + #cancelled > 0 then count_keyed(-#entries - #cancelled) end
  return #entries, left
end

-- one turn of a lane: take what its limits allow (as many as wanted, up to `room`, when `alone`
-- and it has no limit; else one), then put it back where it belongs; returns how many it took.
-- Its keys are checked by the reads before its first write. `waited`: see after_turn.
local function serve_lane(lane, alone, room, deadline, nonce, out, taken, now, waited)
  local limit, allowed, state = limit_of(lane), 1, nil
  if alone and not limit then allowed = room end
  if lane ~= '' then
    state = lane_state(lane)
    local at = next_start(lane, limit, state)
    if at == nil or at > now then allowed = 0 end
  end
  local got, left = 0, true
  if allowed > 0 then
    got, left = take_from_lane(lane, allowed, deadline, nonce, out, taken, lane ~= '' and limit ~= false)
    -- a key with a limit: its tasks hold its slots
    if lane ~= '' and limit and got > 0 then lane_started(lane, limit, got, now, state) end
  end
  after_turn(lane, now, left, state, waited)
  return got
end

-- take up to `limit` ready tasks, lane by lane in turns (_lanes.lua). Lanes of `later` whose
-- time came go after the lanes in the turns: they join the back of the turns, or, when the turns
-- are empty (keys that all wait for their rates, as in a crawl), have their turns straight from
-- `later` in the order of their times, before any lane that a turn put back in the turns; one
-- left when the claim is full joins the turns then. A lane whose keys are broken (the wrong type)
-- fails only its own turn, before writing anything, and waits a second before it is tried again:
-- the other lanes go on. The error is raised if nothing could be taken.
local function take_ready(limit, deadline, nonce, out, now)
  local emptied = false
  places = {} -- lanes move from here on without place_lane
  if redis.call('EXISTS', P .. 'prios') == 1 then place_lane('', now) end -- unkeyed work stored before lanes
  local due, next_due = due_lanes(now), 1
  local heads = read('ZRANGE', P .. 'turns', '0', '1')
  if heads[1] and due[1] then
    promote(due, 1)
    due = {}
  end
  local count, taken, broken = 0, {}, nil
  while count < limit do
    local lane, alone, waited = due[next_due], false, true
    if lane then
      next_due = next_due + 1
      alone = due[next_due] == nil and heads[1] == nil
    else
      lane, alone, waited = heads[1], #heads == 1, false
    end
    if not lane then
      emptied = true
      break
    end
    local ok, got = pcall(serve_lane, lane, alone, limit - count, deadline, nonce, out, taken, now, waited)
    if ok then
      count = count + got
    else
      broken = type(got) == 'table' and got.err or tostring(got) -- redis.call's errors come as text
      if not waited then redis.call('ZREM', P .. 'turns', lane) end
      local at = ms_text(now + 1)
      redis.call('ZADD', P .. 'later', at, lane)
      added_at('later', tonumber(at))
    end
    if not due[next_due] and count < limit then heads = read('ZRANGE', P .. 'turns', '0', '1') end
  end
  promote(due, next_due) -- the claim is full: lanes still due wait in the turns
  if broken and count == 0 then error({err = broken}) end
  return count, emptied
end

-- "<seconds> <work seconds>": until the first delayed task, recurrent run, lease deadline or
-- lane's time (how long a consumer that got nothing may wait), and until the first of those that
-- makes work startable, leases left out (a lease's deadline brings work only if its worker died);
-- "-1" for none. `leased_until`: the deadline of the leases this claim made, if any (the first
-- lease read before may have been later).
local function seconds_to_next_due(now, leased_until)
  local next_due, work_due = leased_until, nil
  for _, key in ipairs({'scheduled', 'rec', 'later', 'leases'}) do
    local first = first_score(key)
    if first and (key == 'leases' or key == 'later') then first = first / 1000 end
    if first == math.huge then first = nil end -- a cron schedule waiting for more times
    if first and key ~= 'leases' and (work_due == nil or first < work_due) then work_due = first end
    if first and (next_due == nil or first < next_due) then next_due = first end
  end
  local function text(due) return due and tostring(math.max(due - now, 0)) or '-1' end
  return text(next_due) .. ' ' .. text(work_due)
end

-- promote due work, then claim up to `want` ready tasks for `consumer` within the cap.
-- A consumer that got fewer than it asked for took all it could: it is entered in `idle` until
-- now + idle_for (it waits for new work next), and told the next due time; when it got nothing,
-- the wake tokens left over are dropped too: it just found that nothing ready could start.
-- A queue paused fleet-wide (pause.lua) has its due work promoted and its expired leases put back,
-- and nothing taken: the consumer waits until resuming wakes it.
-- Returns {capped 1/0 (a concurrency cap or key limits), seconds to the next due time or "-1",
-- paused 1/0, token1, envelope1, ...} and whether it left no lane in the turns (then nothing
-- ready can start, or nothing may)
local function claim(consumer, want, lease, idle_for, nonce, now)
  local asked = want
  if not (absent.cancel_q or note_absent('cancel_q', 'cancel_s')) then expect_keys('cancel_q', 'cancel_s') end
  local settings_now = queue_settings() -- read before the steps write: checks config
  promote_due_delayed(now)
  if due_by('rec', now) then fire_due_recurrent(now) end
  requeue_expired_leases(now)
  local out = {0, '-1', 0}
  if settings_now[3] then
    out[3] = 1
    pcall(redis.call, 'ZADD', P .. 'idle', ms_text(now + idle_for), consumer)
    redis.call('DEL', P .. 'wake')
    return out, true
  end
  local free = free_slots()
  if free then
    out[1] = 1
    want = math.min(want, free)
  end
  -- limits on keys count as a cap too: a claim should start when it is made, not wait in a
  -- worker's prefetch while its key's next start comes due
  if settings_now[2] or any_own_limits() then out[1] = 1 end
  first_score('later') -- the read checks the key, and take_ready needs it
  expect_keys('turns', 'later') -- leases and inflight were checked by reads
  local taken, emptied = take_ready(want, now + lease, nonce, out, now)
  if taken < asked then -- best effort, as waking is
    pcall(redis.call, 'ZADD', P .. 'idle', ms_text(now + idle_for), consumer)
    if taken == 0 then redis.call('DEL', P .. 'wake') end
    out[2] = seconds_to_next_due(now, taken > 0 and now + lease or nil)
  else
    pcall(redis.call, 'ZREM', P .. 'idle', consumer)
  end
  return out, emptied
end

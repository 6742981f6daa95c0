-- The claim step, shared by the scripts that hand out tasks (needs _prelude.lua).

-- lease popped items of one level until `deadline`: one call per key for the whole batch (see
-- _settle.lua); appends token, envelope pairs to out
local function lease_batch(items, level, deadline, taken, out)
  local ids, envelopes = {}, {}
  for k, item in ipairs(items) do
    envelopes[k] = checked(item)
    ids[k] = string.sub(envelopes[k], 1, 12)
  end
  local running = redis.call('HMGET', P .. 'inflight', unpack(ids))
  local failed = redis.call('HMGET', P .. 'failed', unpack(ids))
  local first_token = redis.call('INCRBY', P .. 'fence', #items) - #items
  local leases, inflight, score = {}, {}, lease_score(deadline)
  for k = 1, #items do
    local id, envelope = ids[k], envelopes[k]
    if running[k] or failed[k] or taken[id] then
      -- an id already in use (a forged or copied envelope): give this one its own, losing neither
      local _, failures, crashes, body = envelope_fields(envelope)
      id = new_id()
      envelope = envelope_of(id, failures, crashes, body)
      ids[k] = id
    end
    taken[id] = true
    local token = string.format('%d', first_token + k)
    leases[#leases + 1] = score
    leases[#leases + 1] = id
    inflight[#inflight + 1] = id
    inflight[#inflight + 1] = token .. '|' .. level .. '|' .. envelope
    out[#out + 1] = token
    out[#out + 1] = envelope
  end
  redis.call('ZADD', P .. 'leases', unpack(leases))
  redis.call('HSET', P .. 'inflight', unpack(inflight))
  set_states(ids, 'r')
end

-- seconds until the first delayed task, recurrent run or lease deadline, or "-1" if none: how long a
-- consumer that got nothing may wait
local function seconds_to_next_due(now)
  local next_due = nil
  for _, key in ipairs({'scheduled', 'rec', 'leases'}) do
    local first = tonumber(redis.call('ZRANGE', P .. key, 0, 0, 'WITHSCORES')[2])
    if first and key == 'leases' then first = first / 1000 end
    if first and (next_due == nil or first < next_due) then next_due = first end
  end
  if next_due then return tostring(math.max(next_due - now, 0)) end
  return '-1'
end

-- pop up to `limit` ready tasks by priority, FIFO within one, leased until `deadline` (see
-- lease_batch); returns how many
local function take_ready(limit, deadline, taken, out)
  local count = 0
  while count < limit do
    local top = redis.call('ZRANGE', P .. 'prios', 0, 0)[1]
    if not top then break end
    local level = top
    if not valid_level(level) then level = '0' end -- a list no enqueue made: its items count as priority 0
    local key = P .. 'ready:' .. top
    local items = redis.call('LPOP', key, math.min(limit - count, 500))
    if items then
      lease_batch(items, level, deadline, taken, out)
      count = count + #items
    end
    if redis.call('EXISTS', key) == 0 then
      redis.call('ZREM', P .. 'prios', top)
    end
  end
  return count
end

-- Promote due work, then hand up to `limit` ready tasks to one consumer under a lease. On a capped
-- queue, `limit` counts only free slots; up to `ahead` more are then claimed ahead: leased like the
-- others, but not counted by the cap (they are in the `ahead` set) and queued in state, as they
-- start only in the slot of a task the consumer finished (see exchange.lua). On a queue with no
-- cap, `ahead` adds to `limit`. A consumer that asked for no free slot is not registered idle.
-- Returns {seconds until the next due time or "-1" (always "-1" when it claimed something),
--          1 if the queue is capped else 0,
--          how many of the claims (the last ones) are held ahead,
--          token1, envelope1, token2, envelope2, ...}
local function claim(consumer, limit, ahead, lease, idle_for, now)
  local asked = limit
  local idle_member = consumer .. '|' .. lease
  redis.call('ZREM', P .. 'idle', idle_member)
  local out = {'-1', 0, 0}

  put_back_handed(consumer) -- then claimed below in priority order like the rest

  -- delayed tasks that are due
  local due = redis.call('ZRANGEBYSCORE', P .. 'scheduled', '-inf', now, 'LIMIT', 0, 1000)
  local promoted = #due
  for _, member in ipairs(due) do
    push_ready(level_and_envelope(member))
    redis.call('ZREM', P .. 'scheduled', member)
  end

  -- recurrent runs that are due: one run each, next time on the grid start + k * interval
  local fired = redis.call('ZRANGEBYSCORE', P .. 'rec', '-inf', now, 'WITHSCORES', 'LIMIT', 0, 100)
  for i = 1, #fired, 2 do
    local name, at = fired[i], tonumber(fired[i + 1])
    local key = P .. 'rec:' .. name
    local spec = redis.call('HMGET', key, 'body', 'interval', 'repeats', 'stop')
    local stop = tonumber(spec[4] or '')
    if spec[1] and stop and at > stop then
      spec[1] = false -- a run past the schedule's stop: the schedule just ends
    end
    if spec[1] then
      push_ready('max', envelope_of(new_id(), 0, 0, spec[1]))
      promoted = promoted + 1
      local interval, repeats = tonumber(spec[2]), tonumber(spec[3]) or 1
      local upcoming = at
      if interval and interval > 0 then
        upcoming = at + interval * (math.floor((now - at) / interval) + 1)
      else
        repeats = 1 -- a schedule with no valid interval runs once, then ends
      end
      if repeats > 0 then repeats = repeats - 1 end
      if repeats == 0 or (stop and upcoming > stop) then
        redis.call('DEL', key)
        redis.call('ZREM', P .. 'rec', name)
      else
        redis.call('HSET', key, 'repeats', repeats)
        redis.call('ZADD', P .. 'rec', upcoming, name)
      end
    else
      redis.call('DEL', key)
      redis.call('ZREM', P .. 'rec', name)
    end
  end

  -- leases that expired: their worker died or stalled; the task goes back to the front of its
  -- level (it was already due) with one more crash. A claim held ahead counts one too: it may
  -- have started in a finished task's slot before its worker could say so.
  local expired = redis.call('ZRANGEBYSCORE', P .. 'leases', '-inf', lease_score(now), 'LIMIT', 0, 1000)
  drop_ahead(expired)
  for k = #expired, 1, -1 do -- each to the front: the last first, so that they keep their order
    local id = expired[k]
    local held = redis.call('HGET', P .. 'inflight', id)
    redis.call('ZREM', P .. 'leases', id)
    if held then
      local _, level, envelope = inflight_fields(held)
      local task_id, failures, crashes, body = envelope_fields(envelope)
      push_ready(level, envelope_of(task_id, failures, crashes + 1, body), true)
      promoted = promoted + 1
      redis.call('HDEL', P .. 'inflight', id)
    end
  end

  -- the fleet-wide cap: running tasks are the leases not held ahead
  local cap = redis.call('HGET', P .. 'config', 'max_concurrency')
  if cap then
    out[2] = 1
    limit = math.min(limit, tonumber(cap) - counted_leases())
  else
    limit, ahead = limit + ahead, 0
  end

  local taken, deadline = {}, now + lease -- ids leased by this call
  take_ready(limit, deadline, taken, out)
  if ahead > 0 then
    local first = #out + 2
    out[3] = take_ready(ahead, deadline, taken, out)
    if out[3] > 0 then
      local ids = {}
      for i = first, #out, 2 do ids[#ids + 1] = string.sub(out[i], 1, 12) end
      call_in_chunks('SADD', P .. 'ahead', ids)
      set_states(ids, 'q')
    end
  end
  if #out == 3 and asked > 0 then
    redis.call('ZADD', P .. 'idle', now + idle_for, idle_member)
  end
  -- work this call made ready but did not take goes to the other idle consumers
  if promoted > 0 and redis.call('EXISTS', P .. 'prios') == 1 then wake(promoted, now) end

  if #out == 3 then out[1] = seconds_to_next_due(now) end
  return out
end

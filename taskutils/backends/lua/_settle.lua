-- The transitions of a claimed task, each refused unless its token still holds the lease
-- (needs _prelude.lua). Each returns 1 if applied, 0 if the lease was no longer held.

-- done (failure_record == '') or failed for good; the outcome is kept ttl seconds as result:<id>
local function finish(id, token, outcome, ttl, failure_record)
  local level, envelope = release(id, token)
  if not level then return 0 end
  if ttl > 0 then
    redis.call('SET', P .. 'result:' .. id, outcome, 'PX', math.ceil(ttl * 1000))
  end
  if failure_record ~= '' then
    redis.call('HSET', P .. 'failed', id, level .. '|' .. envelope)
    redis.call('HSET', P .. 'failed_info', id, failure_record)
  end
  return 1
end

-- a failed attempt goes back, now or after a delay, with one more failure counted
local function retry(id, token, delay, now)
  local level, held = release(id, token)
  if not level then return 0 end
  local task_id, failures, crashes, body = envelope_fields(held)
  local envelope = envelope_of(task_id, failures + 1, crashes, body)
  if delay > 0 then
    schedule(level, envelope, now + delay, now)
  else
    push_ready(level, envelope)
  end
  return 1
end

-- handed back unstarted or unfinished (its worker stops): to the front of its level, as it was
local function hand_back(id, token)
  local level, envelope = release(id, token)
  if not level then return 0 end
  push_ready(level, envelope, true)
  return 1
end

-- Settling the tasks a worker finished (needs _prelude.lua and _envelope.lua). Each settlement is
-- refused unless its token still holds the lease. The lease bookkeeping of the whole batch is one
-- call per key (HMGET, HDEL, ZREM, one HDEL per state bucket), not a few calls per task: a call
-- from Lua costs more than the work it does on these small keys.

-- a finished task's outcome, kept ttl seconds
local function keep_outcome(id, outcome, ttl)
  if ttl > 0 then
    redis.call('SET', P .. 'result:' .. id, outcome, 'PX', math.ceil(ttl * 1000))
  end
end

-- a task failed for good: kept in the failed store with the reason
local function store_failed(id, level, envelope, failure_record)
  redis.call('HSET', P .. 'failed', id, level .. '|' .. envelope)
  redis.call('HSET', P .. 'failed_info', id, failure_record)
end

-- a failed attempt goes back, now or after a delay, with one more failure counted
local function retry(level, held, delay, now)
  local task_id, failures, crashes, body = envelope_fields(held)
  local envelope = envelope_of(task_id, failures + 1, crashes, body)
  if delay > 0 then
    schedule(level, envelope, now + delay, now)
  else
    push_ready(level, envelope)
  end
end

-- Settlements are ARGV groups of 5 from index `from`: kind, task id, token, data, failure record.
-- kind "d" done (data: outcome), "f" failed for good (data: outcome), "r" retry (data: delay
-- seconds), "b" hand back unstarted or unfinished, to the front of its level (data unused).
-- Returns one "1" (applied) or "0" (the lease was no longer held) per settlement, as one string.
local function settle(from, now, ttl)
  local ids = {}
  for i = from, #ARGV, 5 do ids[#ids + 1] = ARGV[i + 1] end
  if #ids == 0 then return '' end
  local held = redis.call('HMGET', P .. 'inflight', unpack(ids))
  local applied, released, finished, seen = {}, {}, {}, {}
  for k, id in ipairs(ids) do
    local i = from + (k - 1) * 5
    local holds = false
    if held[k] and not seen[id] then
      local bar = string.find(held[k], '|', 1, true)
      holds = bar ~= nil and string.sub(held[k], 1, bar - 1) == ARGV[i + 2]
    end
    if holds then
      seen[id] = true
      released[#released + 1] = id
      local kind, failure_record = ARGV[i], ARGV[i + 4]
      if kind == 'd' and failure_record == '' then -- done: the lease's envelope is not needed
        keep_outcome(id, ARGV[i + 3], ttl)
        finished[#finished + 1] = id
      else
        local _, level, envelope = inflight_fields(held[k])
        if kind == 'r' then
          retry(level, envelope, tonumber(ARGV[i + 3]), now)
        elseif kind == 'b' then
          push_ready(level, envelope, true)
        else
          keep_outcome(id, ARGV[i + 3], ttl)
          if failure_record ~= '' then store_failed(id, level, envelope, failure_record) end
          finished[#finished + 1] = id
        end
      end
    end
    applied[k] = holds and '1' or '0'
  end
  if #released > 0 then
    call_in_chunks('HDEL', P .. 'inflight', released)
    call_in_chunks('ZREM', P .. 'leases', released)
    drop_ahead(released)
    drop_states(finished)
  end
  return table.concat(applied)
end

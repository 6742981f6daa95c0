-- Reading envelopes and leases back, trusting nothing (needs _prelude.lua): anything malformed
-- found in the queue's keys is wrapped as the body of a new, well-formed envelope.

local function checked(envelope)
  if string.find(envelope, '^%x%x%x%x%x%x%x%x%x%x%x%x|%d+|%d+|') then return envelope end
  return new_id() .. '|0|0|' .. envelope
end

local function valid_level(level)
  return level == 'max' or string.find(level, '^-?%d+$') ~= nil
end

-- "<level>|<envelope>" (a scheduled member or a failed entry) -> level, checked envelope
local function level_and_envelope(text)
  local bar = string.find(text, '|', 1, true)
  if bar and valid_level(string.sub(text, 1, bar - 1)) then
    return string.sub(text, 1, bar - 1), checked(string.sub(text, bar + 1))
  end
  return '0', checked(text)
end

-- a checked envelope -> id, failures, crashes, body
local function envelope_fields(envelope)
  local second = string.find(envelope, '|', 14, true)
  local third = string.find(envelope, '|', second + 1, true)
  return string.sub(envelope, 1, 12), tonumber(string.sub(envelope, 14, second - 1)),
    tonumber(string.sub(envelope, second + 1, third - 1)), string.sub(envelope, third + 1)
end

local function envelope_of(id, failures, crashes, body)
  return id .. '|' .. failures .. '|' .. crashes .. '|' .. body
end

-- an inflight value -> token, level, checked envelope
local function inflight_fields(held)
  local bar = string.find(held, '|', 1, true)
  if bar then
    local level, envelope = level_and_envelope(string.sub(held, bar + 1))
    return string.sub(held, 1, bar - 1), level, envelope
  end
  return '', '0', checked(held)
end

-- release the lease of id if token still holds it; returns its level and envelope, or nil
local function release(id, token)
  local held = redis.call('HGET', P .. 'inflight', id)
  if not held then return nil end
  local held_token, level, envelope = inflight_fields(held)
  if held_token ~= token then return nil end
  redis.call('HDEL', P .. 'inflight', id)
  redis.call('ZREM', P .. 'leases', id)
  local key, field = state_of(id)
  redis.call('HDEL', key, field)
  return level, envelope
end

-- tasks an enqueue handed straight to consumer (see hand_off in _prelude.lua) that it did not take
-- from its wake list while waiting: back to the front of their level; returns how many
local function put_back_handed(consumer)
  local own = P .. 'wake:' .. consumer
  if redis.call('EXISTS', own) == 0 then return 0 end
  local returned = 0
  for _, item in ipairs(redis.call('LRANGE', own, 0, -1)) do
    if item ~= '1' then -- '1' only interrupts a wait
      local token, _, envelope = inflight_fields(item)
      local level, held = release(string.sub(envelope, 1, 12), token)
      if level then
        push_ready(level, held, true)
        returned = returned + 1
      end
    end
  end
  redis.call('DEL', own)
  return returned
end

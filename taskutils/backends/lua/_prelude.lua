-- Shared helpers, prepended to every script of this folder when it is loaded.
--
-- KEYS[1] - the queue's key prefix, "tu:{<queue>}:"; every key a script touches is that prefix
--           plus a suffix, so all keys of one queue share one hash tag (one Redis Cluster slot).
-- Formats:
--   envelope   = <id: 12 hex digits> "|" <failures> "|" <crashes> "|" <msgpack body>
--   level      = the priority as a decimal integer, or "max" for recurrent runs
--   scheduled  = ZSET member <level> "|" <envelope>, score = due time
--   inflight   = HASH field <id>, value <token> "|" <level> "|" <envelope>
--   failed     = HASH field <id>, value <level> "|" <envelope> (failed_info holds the reason)
--   state      = task states live in small hashes of STATE_BUCKET ids each, "state:<id // 64 in hex>",
--                field <id % 64>: Redis keeps hashes that small as compact listpacks (a few bytes a
--                task instead of ~60 in one big hash), and an emptied bucket disappears
-- Anything else found in these keys (garbage written by hand or by a bug) is wrapped as the
-- body of a new, well-formed envelope: a worker then fails it with a reason, and nothing
-- here raises on it.
local P = KEYS[1]

local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

local STATE_BUCKET = 64

-- the key and field holding the state of task id
local function state_of(id)
  local number = tonumber(id, 16)
  return P .. 'state:' .. string.format('%x', math.floor(number / STATE_BUCKET)), tostring(number % STATE_BUCKET)
end

local function set_state(id, state)
  local key, field = state_of(id)
  redis.call('HSET', key, field, state)
end

local function new_id()
  return string.format('%012x', redis.call('INCR', P .. 'seq'))
end

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

-- give up to n consumers blocked in wait() a wake token
local function wake(n, now)
  redis.call('ZREMRANGEBYSCORE', P .. 'idle', '-inf', now)
  local missing = math.min(n, redis.call('ZCARD', P .. 'idle')) - redis.call('LLEN', P .. 'wake')
  for _ = 1, missing do
    redis.call('RPUSH', P .. 'wake', '1')
  end
end

-- make a task ready at the back of its level (or at the front, to run next)
local function push_ready(level, envelope, front)
  local score = '-inf'
  if level ~= 'max' then score = -tonumber(level) end
  redis.call(front and 'LPUSH' or 'RPUSH', P .. 'ready:' .. level, envelope)
  redis.call('ZADD', P .. 'prios', score, level)
  set_state(string.sub(envelope, 1, 12), 'q')
end

-- delay a task; if it is now the first due, wake one idle consumer so it waits for the right time
local function schedule(level, envelope, due, now)
  local first = redis.call('ZRANGE', P .. 'scheduled', 0, 0, 'WITHSCORES')[2]
  redis.call('ZADD', P .. 'scheduled', due, level .. '|' .. envelope)
  set_state(string.sub(envelope, 1, 12), 's')
  if not first or due < tonumber(first) then wake(1, now) end
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

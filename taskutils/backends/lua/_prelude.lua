-- Shared helpers, prepended to every script of this folder when it is loaded.
--
-- KEYS[1] - the queue's key prefix, "tu:{<queue>}:"; every key a script touches is that prefix
--           plus a suffix, so all keys of one queue share one hash tag (one Redis Cluster slot).
-- Formats:
--   envelope   = <id: 12 hex digits> "|" <failures> "|" <crashes> "|" <msgpack body>
--   level      = the priority as a decimal integer, or "max" for recurrent runs
--   scheduled  = ZSET member <level> "|" <envelope>, score = due time
--   inflight   = HASH field <id>, value <token> "|" <level> "|" <envelope>
local P = KEYS[1]

local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- the first n "|"-separated fields of s, then the rest as field n + 1
local function split(s, n)
  local parts, pos = {}, 1
  for i = 1, n do
    local bar = string.find(s, '|', pos, true)
    parts[i] = string.sub(s, pos, bar - 1)
    pos = bar + 1
  end
  parts[n + 1] = string.sub(s, pos)
  return parts
end

local function new_id()
  return string.format('%012x', redis.call('INCR', P .. 'seq'))
end

local function push_ready(level, envelope)
  local score = '-inf'
  if level ~= 'max' then score = -tonumber(level) end
  redis.call('RPUSH', P .. 'ready:' .. level, envelope)
  redis.call('ZADD', P .. 'prios', score, level)
  redis.call('HSET', P .. 'state', string.sub(envelope, 1, 12), 'q')
end

-- give up to n consumers blocked in wait() a wake token
local function wake(n, now)
  redis.call('ZREMRANGEBYSCORE', P .. 'idle', '-inf', now)
  local missing = math.min(n, redis.call('ZCARD', P .. 'idle')) - redis.call('LLEN', P .. 'wake')
  for _ = 1, missing do
    redis.call('RPUSH', P .. 'wake', '1')
  end
end

-- delay a task; if it is now the first due, wake one idle consumer so it waits for the right time
local function schedule(level, envelope, due, now)
  local first = redis.call('ZRANGE', P .. 'scheduled', 0, 0, 'WITHSCORES')[2]
  redis.call('ZADD', P .. 'scheduled', due, level .. '|' .. envelope)
  redis.call('HSET', P .. 'state', string.sub(envelope, 1, 12), 's')
  if not first or due < tonumber(first) then wake(1, now) end
end

-- release the lease of id if token still holds it; returns the inflight fields or nil
local function release(id, token)
  local held = redis.call('HGET', P .. 'inflight', id)
  if not held then return nil end
  local fields = split(held, 2)
  if fields[1] ~= token then return nil end
  redis.call('HDEL', P .. 'inflight', id)
  redis.call('ZREM', P .. 'leases', id)
  redis.call('HDEL', P .. 'state', id)
  return fields
end

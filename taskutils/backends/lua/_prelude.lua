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
--   ahead      = SET of the ids of claims held ahead on a capped queue (see _claim.lua)
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

-- a lease deadline as a leases score: whole milliseconds, which Redis keeps as integers in a
-- small sorted set (adding and removing members is about 3 times cheaper than with fractions)
local function lease_score(seconds)
  return string.format('%d', math.floor(seconds * 1000))
end

-- the key and field holding the state of task id
local function state_of(id)
  local number = tonumber(id, 16)
  return P .. 'state:' .. string.format('%x', math.floor(number / STATE_BUCKET)), tostring(number % STATE_BUCKET)
end

local function set_state(id, state)
  local key, field = state_of(id)
  redis.call('HSET', key, field, state)
end

-- redis.call(command, key, args...) in slices of at most 1000 arguments (Lua's unpack has a stack
-- limit); returns the replies joined when they are lists (HMGET's missing fields stay false)
local function call_in_chunks(command, key, args)
  if #args <= 1000 then return redis.call(command, key, unpack(args)) end
  local replies = {}
  for first = 1, #args, 1000 do
    local reply = redis.call(command, key, unpack(args, first, math.min(first + 999, #args)))
    if type(reply) == 'table' then
      for _, item in ipairs(reply) do replies[#replies + 1] = item end
    end
  end
  return replies
end

-- the state buckets of ids: {key = {field, ...}} and the keys in first-seen order
local function state_buckets(ids)
  local buckets, keys = {}, {}
  for _, id in ipairs(ids) do
    local key, field = state_of(id)
    if not buckets[key] then
      buckets[key] = {}
      keys[#keys + 1] = key
    end
    local fields = buckets[key]
    fields[#fields + 1] = field
  end
  return buckets, keys
end

-- set the state of many tasks: one HSET per bucket (consecutive ids share one)
local function set_states(ids, state)
  local buckets, keys = state_buckets(ids)
  for _, key in ipairs(keys) do
    local pairs_ = {}
    for _, field in ipairs(buckets[key]) do
      pairs_[#pairs_ + 1] = field
      pairs_[#pairs_ + 1] = state
    end
    call_in_chunks('HSET', key, pairs_)
  end
end

-- forget the state of many tasks: one HDEL per bucket
local function drop_states(ids)
  local buckets, keys = state_buckets(ids)
  for _, key in ipairs(keys) do
    call_in_chunks('HDEL', key, buckets[key])
  end
end

-- task ids are the queue's sequence numbers as 12 hex digits
local function id_of(number)
  return string.format('%012x', number)
end

local function new_id()
  return id_of(redis.call('INCR', P .. 'seq'))
end

-- give up to n consumers blocked in wait() a wake token
local function wake(n, now)
  if redis.call('EXISTS', P .. 'idle') == 0 then return end -- nobody is waiting: the common case
  now = now or clock()
  redis.call('ZREMRANGEBYSCORE', P .. 'idle', '-inf', now)
  local missing = math.min(n, redis.call('ZCARD', P .. 'idle')) - redis.call('LLEN', P .. 'wake')
  for _ = 1, missing do
    redis.call('RPUSH', P .. 'wake', '1')
  end
end

-- the leases a queue's cap counts: all but the claims held ahead, which wait for a slot (_claim.lua)
local function counted_leases()
  return redis.call('ZCARD', P .. 'leases') - redis.call('SCARD', P .. 'ahead')
end

-- ids no longer held ahead: they took a finished task's slot, or their lease ended
local function drop_ahead(ids)
  if #ids > 0 and redis.call('EXISTS', P .. 'ahead') == 1 then call_in_chunks('SREM', P .. 'ahead', ids) end
end

-- lease a new ready task straight to a consumer blocked in wait(), pushing the claim on its own
-- wake list: it starts without another round trip. Only when nothing else is ready (so priority
-- and FIFO order hold) and the cap allows. Returns true if handed off.
local function hand_off(level, envelope)
  if redis.call('EXISTS', P .. 'idle') == 0 or redis.call('EXISTS', P .. 'prios') == 1 then return false end
  local now = clock()
  redis.call('ZREMRANGEBYSCORE', P .. 'idle', '-inf', now)
  local member = redis.call('ZRANGE', P .. 'idle', -1, -1)[1]
  if not member then return false end
  local cap = redis.call('HGET', P .. 'config', 'max_concurrency')
  if cap and counted_leases() >= tonumber(cap) then return false end
  local bar = string.find(member, '|[^|]*$')
  local consumer, lease = string.sub(member, 1, bar - 1), tonumber(string.sub(member, bar + 1))
  if not lease then return false end
  redis.call('ZREM', P .. 'idle', member)
  local id = string.sub(envelope, 1, 12)
  local token = string.format('%d', redis.call('INCR', P .. 'fence'))
  redis.call('ZADD', P .. 'leases', lease_score(now + lease), id)
  redis.call('HSET', P .. 'inflight', id, token .. '|' .. level .. '|' .. envelope)
  set_state(id, 'r')
  redis.call('RPUSH', P .. 'wake:' .. consumer, token .. '|' .. level .. '|' .. envelope)
  redis.call('EXPIRE', P .. 'wake:' .. consumer, 60)
  return true
end

-- a priority level's score in prios, which is ordered highest priority first ("max" before all)
local function level_rank(level)
  if level == 'max' then return -math.huge end
  return -tonumber(level)
end

-- mark a priority level as holding ready tasks
local function mark_level(level)
  local rank = level_rank(level)
  redis.call('ZADD', P .. 'prios', rank == -math.huge and '-inf' or rank, level)
end

-- make a task ready at the back of its level (or at the front, to run next)
local function push_ready(level, envelope, front)
  redis.call(front and 'LPUSH' or 'RPUSH', P .. 'ready:' .. level, envelope)
  mark_level(level)
  set_state(string.sub(envelope, 1, 12), 'q')
end

-- make tasks of one level ready at its back, in order: one call per key for the lot
local function push_ready_many(level, envelopes)
  call_in_chunks('RPUSH', P .. 'ready:' .. level, envelopes)
  mark_level(level)
  local ids = {}
  for k, envelope in ipairs(envelopes) do ids[k] = string.sub(envelope, 1, 12) end
  set_states(ids, 'q')
end

-- delay a task; if it is now the first due, wake one idle consumer so it waits for the right time
local function schedule(level, envelope, due, now)
  local first = redis.call('ZRANGE', P .. 'scheduled', 0, 0, 'WITHSCORES')[2]
  redis.call('ZADD', P .. 'scheduled', due, level .. '|' .. envelope)
  set_state(string.sub(envelope, 1, 12), 's')
  if not first or due < tonumber(first) then wake(1, now) end
end

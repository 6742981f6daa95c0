-- Small pure helpers (no Redis calls), prepended to every script of this folder.
--
-- KEYS[1] is the queue's key prefix "tu:{<queue>}:"; every key a script touches is this prefix
-- plus a suffix (taskutils/backends/redis.py lists them all), so all keys of one queue share one
-- hash tag: one Redis Cluster slot.
--
-- Formats:
--   seq        a task's sequence number in its queue, in lower-case hex; the task's id is
--              <epoch> "-" <seq>, where the epoch is made with the queue (see _store.lua)
--   envelope   <seq> "|" <failures> "|" <crashes> "|" <msgpack body>
--   level      a priority as a decimal integer, or "max" for recurrent runs (before every priority)
--   lease      the inflight HASH value of a claimed task: <token> "|" <level> "|" <envelope>
--
-- The same helpers serve scripts run by EVALSHA and the Redis Functions of one library (Redis 7+,
-- redis_scripts.py), where they are made once and serve every call: each call starts with
-- begin_call, which sets P and ARGV and resets whatever a helper keeps for one call (on_call),
-- and ends with end_call (at_call_end).
-- `as_function`: whether this call is a Function's (Redis then refuses it whole when over
-- maxmemory, before it runs: see refuse_when_full in _store.lua)
local P, ARGV, as_function = nil, nil, false
local call_resets = {}
local function on_call(reset)
  call_resets[#call_resets + 1] = reset
end
local function begin_call(keys, args, function_call)
  P, ARGV, as_function = keys[1], args, function_call
  for _, reset in ipairs(call_resets) do reset() end
end
-- what a helper writes once at the end of a call, for what it gathered during the call (also
-- after a step that raised: the steps before it wrote)
local call_ends = {}
local function at_call_end(finish)
  call_ends[#call_ends + 1] = finish
end
local function end_call()
  for _, finish in ipairs(call_ends) do finish() end
end

-- task states and outcomes live in small hashes of STATE_BUCKET tasks each (see _store.lua)
local STATE_BUCKET = 64

-- a time as a leases score: whole milliseconds, which Redis keeps as integers in a small sorted
-- set (adding and removing members costs about a third of what fractions cost)
local function lease_score(seconds)
  return string.format('%d', math.floor(seconds * 1000))
end

-- Times the scripts keep for themselves (the scores of `later` and `idle`, a unique value's hold)
-- are whole milliseconds in text, rounded up: a time waited for is never
-- reached early. Redis 7.0 writes each Lua number it is given with "%.17g" and reads a fraction
-- back with a slow strtod: with fractions of a second, those conversions cost more than most
-- commands of these scripts.
local function ms_text(seconds)
  return string.format('%d', math.ceil(seconds * 1000))
end

-- a time up to which everything is due, in the form of ms_text
local function due_ms(now)
  return string.format('%d', math.floor(now * 1000))
end

-- the bucket (hex) and field of a task's state and outcome
local function bucket_of(seq)
  local number = tonumber(seq, 16)
  return string.format('%x', math.floor(number / STATE_BUCKET)), tostring(number % STATE_BUCKET)
end

local function valid_level(level)
  return level == 'max' or string.find(level, '^-?%d+$') ~= nil
end

-- a level's score in prios, which is ordered highest priority first
local function level_rank(level)
  if level == 'max' then return -math.huge end
  return -tonumber(level)
end

local function is_envelope(text)
  return string.find(text, '^%x+|%d+|%d+|') ~= nil and #string.match(text, '^%x+') <= 15
end

-- a well-formed envelope -> seq, failures, crashes, body
local function envelope_fields(envelope)
  local first = string.find(envelope, '|', 1, true)
  local second = string.find(envelope, '|', first + 1, true)
  local third = string.find(envelope, '|', second + 1, true)
  return string.sub(envelope, 1, first - 1), tonumber(string.sub(envelope, first + 1, second - 1)),
    tonumber(string.sub(envelope, second + 1, third - 1)), string.sub(envelope, third + 1)
end

-- counts kept as whole numbers (a count that no longer fits a double's integers stays put)
local function count_text(count)
  return string.format('%d', math.min(count, 1e15))
end

local function envelope_of(seq, failures, crashes, body)
  return seq .. '|' .. count_text(failures) .. '|' .. count_text(crashes) .. '|' .. body
end

local function seq_of(envelope)
  return string.sub(envelope, 1, string.find(envelope, '|', 1, true) - 1)
end

-- "<level>|<rest>" -> level, rest; a missing or invalid level reads as priority 0 and the whole text
local function split_level(text)
  local bar = string.find(text, '|', 1, true)
  if bar and valid_level(string.sub(text, 1, bar - 1)) then
    return string.sub(text, 1, bar - 1), string.sub(text, bar + 1)
  end
  return '0', text
end

-- a lease -> token, level, rest (an envelope unless the value is damaged)
local function lease_fields(lease)
  local bar = string.find(lease, '|', 1, true)
  if not bar then return '', '0', lease end
  local level, rest = split_level(string.sub(lease, bar + 1))
  return string.sub(lease, 1, bar - 1), level, rest
end

local function token_of(lease)
  local bar = string.find(lease, '|', 1, true)
  return bar and string.sub(lease, 1, bar - 1) or ''
end

-- the text of an error caught by pcall: a refused redis.call gives a table {err = text}
local function error_text(caught)
  if type(caught) == 'table' and caught.err then return caught.err end
  return tostring(caught)
end

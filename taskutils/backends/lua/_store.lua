-- Reading and writing a queue's bookkeeping (needs _prelude.lua): the clock, task ids, task
-- states and outcomes.
--
-- Keys: P..'epoch', P..'seq', P..'state:<bucket>', P..'outcome:<bucket>'.
-- Task states and outcomes live in hashes of STATE_BUCKET tasks ("state:<seq // 64 in hex>", field
-- <seq % 64>): Redis keeps hashes that small as compact listpacks, a few bytes a task instead of
-- a key of its own, and an emptied bucket disappears. An outcome bucket expires result_ttl after
-- its last write (never sooner than it was set to before), so an outcome is kept at least
-- result_ttl seconds, and at most as long as later outcomes of its bucket.

-- Lua does not roll back: a write failing halfway (a key holding the wrong type, written by hand
-- or by a bug) would leave the queue half changed. So scripts check the types of the keys they
-- are about to write, before their first write, and refuse with a clear error instead. A read of
-- a key before the first write checks it as well (see read): most keys are read anyway, so most
-- checks cost no call of their own.
local checked_keys = {} -- key -> its type when expect read it, or true when a read checked it
on_call(function() checked_keys = {} end)
local function expect(key, wanted)
  if checked_keys[key] then return checked_keys[key] end
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'none' and kind ~= wanted then
    error({err = 'WRONGTYPE ' .. key .. ' holds a ' .. kind .. ' where taskutils keeps a ' .. wanted ..
      ': delete or rename that key to serve the queue again'})
  end
  checked_keys[key] = kind
  return kind
end

-- the type of key each reading command expects
local READ_TYPES = {GET = 'string', HGET = 'hash', HMGET = 'hash', ZRANGE = 'zset', ZRANGEBYSCORE = 'zset',
  ZSCORE = 'zset', LRANGE = 'list', LLEN = 'list', LINDEX = 'list', SETRANGE = 'string', HEXISTS = 'hash'}

-- redis.call(command, key, ...) of a command that reads `key`, which counts as its check (see
-- expect): a key of the wrong type fails with expect's clear error
local function read(command, key, ...)
  local reply = redis.pcall(command, key, ...)
  if type(reply) == 'table' and reply.err then
    expect(key, READ_TYPES[command])
    error(reply)
  end
  checked_keys[key] = checked_keys[key] or true
  return reply
end

-- Under maxmemory with noeviction, Redis refuses a script's write commands only until the script
-- first writes, and commands that only remove (ZREM, HDEL, DEL) count as writes yet are never
-- refused: a script that began with one would write on past the operator's limit. So every script
-- that writes calls this first: a write Redis refuses when full, and that changes nothing
-- (SETRANGE of an empty string neither creates nor alters a key). A Function needs none: Redis 7
-- refuses a Function that may write (no 'no-writes' flag) before it runs.
local function refuse_when_full()
  if not as_function then read('SETRANGE', P .. 'seq', '0', '') end
end

-- the queue's settings that claims and limits read (config HASH): {max_concurrency, default_limit,
-- paused (pause.lua)}, read once a call
local settings = nil
on_call(function() settings = nil end)
local function queue_settings()
  if not settings then settings = read('HMGET', P .. 'config', 'max_concurrency', 'default_limit', 'paused') end
  return settings
end

-- the types of the keys every call of a script may write
local KEY_TYPES = {leases = 'zset', scheduled = 'zset', rec = 'zset', config = 'hash', failed = 'hash',
  failed_info = 'hash', turns = 'zset', later = 'zset', limits = 'hash', cancel_q = 'set', cancel_s = 'set',
  cancel_run = 'set', cron_low = 'set'}
local function expect_keys(...)
  for _, suffix in ipairs({...}) do expect(P .. suffix, KEY_TYPES[suffix]) end
end

-- whether a queue key exists, for a key this call only removes from (the cancel marks): from the
-- type expect_keys read
local function present(suffix)
  return expect(P .. suffix, KEY_TYPES[suffix]) ~= 'none'
end

-- queue keys that did not exist when this call began: keys that are usually missing (cancel marks,
-- the schedules) are asked about in one EXISTS, and when none exists each counts as checked and
-- needs no read (a step that creates one in this call clears its entry)
local absent = {}
on_call(function() absent = {} end)
local function note_absent(...)
  local suffixes, keys = {...}, {}
  for k, suffix in ipairs(suffixes) do keys[k] = P .. suffix end
  if redis.call('EXISTS', unpack(keys)) > 0 then return false end
  for _, suffix in ipairs(suffixes) do
    absent[suffix] = true
    checked_keys[P .. suffix] = 'none'
  end
  return true
end

-- the first score of one of the queue's time-ordered ZSETs (scheduled, rec, leases, later), or
-- nil: read once a call (the read checks the key), and again after due_by found it due. Members
-- removed since the read can only make the true first later, which due_by tolerates (it reads
-- again when the kept one is due); a step adding a member earlier than the kept first clears it.
local firsts = {}
on_call(function() firsts = {} end)
local function first_score(suffix)
  if absent[suffix] then return nil end
  if firsts[suffix] == nil then firsts[suffix] = tonumber(read('ZRANGE', P .. suffix, '0', '0', 'WITHSCORES')[2]) or false end
  return firsts[suffix] or nil
end

local function due_by(suffix, score)
  local first = first_score(suffix)
  if not first or first > score then return false end
  firsts[suffix] = nil
  return true
end

-- a member was added at `score` to one of those ZSETs: the first kept stays right
local function added_at(suffix, score)
  absent[suffix] = nil
  local first = firsts[suffix]
  if first == false or (first and score < first) then firsts[suffix] = score end
end

local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- redis.call(command, key, args...) in slices of at most 1000 arguments (Lua's unpack has a stack
-- limit); returns the replies joined when they are lists
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

-- the queue's epoch, made with the queue from the server's clock: ids and results of a queue
-- that Redis lost and that was made again (same sequence numbers) never pass for each other
-- (stored_epoch reads it once a call, checking the key; epoch makes it if there is none)
local epoch_read = nil -- false: read, and there was none
on_call(function() epoch_read = nil end)
local function stored_epoch()
  if epoch_read == nil then epoch_read = read('GET', P .. 'epoch') or false end
  return epoch_read or nil
end

local function epoch()
  local known = stored_epoch()
  if known then return known end
  local t = redis.call('TIME')
  epoch_read = string.format('%x', (tonumber(t[1]) * 1000000 + tonumber(t[2])) % 4294967296)
  redis.call('SET', P .. 'epoch', epoch_read)
  return epoch_read
end

-- `count` new sequence numbers; returns the number before the first
local function new_seqs(count)
  expect(P .. 'seq', 'string') -- callers call this before their step writes
  return redis.call('INCRBY', P .. 'seq', count) - count
end

local function hex(number)
  return string.format('%x', number)
end

-- anything found where an envelope belongs (garbage written by hand or by a bug) becomes the
-- body of a new envelope: a worker then fails it with a reason, and nothing here raises on it
local function checked(text)
  if is_envelope(text) then return text end
  return envelope_of(hex(new_seqs(1) + 1), 0, 0, text)
end

-- seqs grouped by bucket: {bucket = {field, ...}}, or with `values` {bucket = {field, value, ...}}
-- (values[k] or `values` itself for every seq when it is not a table); and the buckets in
-- first-seen order
local function by_bucket(seqs, values)
  local groups, buckets = {}, {}
  for k, seq in ipairs(seqs) do
    local bucket, field = bucket_of(seq)
    if not groups[bucket] then
      groups[bucket] = {}
      buckets[#buckets + 1] = bucket
    end
    local fields = groups[bucket]
    fields[#fields + 1] = field
    if values ~= nil then fields[#fields + 1] = type(values) == 'table' and values[k] or values end
  end
  return groups, buckets
end

-- the state buckets of seqs hold hashes (see expect), and their outcome buckets too if `outcomes`
local function expect_buckets(seqs, outcomes)
  for _, seq in ipairs(seqs) do
    local bucket = bucket_of(seq)
    expect(P .. 'state:' .. bucket, 'hash')
    if outcomes then expect(P .. 'outcome:' .. bucket, 'hash') end
  end
end

-- a field and value written beside a task's state the next time this call sets it, in the same
-- HSET: {seq = {field, value}} (the record of a unique value the task takes, _unique.lua)
local with_state = {}
on_call(function() with_state = {} end)

-- set the state ("s" or "q") of tasks: one HSET per bucket
local function set_states(seqs, state)
  local groups, buckets = by_bucket(seqs, state)
  if next(with_state) then
    for _, seq in ipairs(seqs) do
      local extra = with_state[seq]
      if extra then
        local fields = groups[bucket_of(seq)]
        fields[#fields + 1], fields[#fields + 2] = extra[1], extra[2]
        with_state[seq] = nil
      end
    end
  end
  for _, bucket in ipairs(buckets) do
    call_in_chunks('HSET', P .. 'state:' .. bucket, groups[bucket])
  end
end

local function set_state(seq, state)
  local bucket, field = bucket_of(seq)
  local extra = with_state[seq]
  if extra then
    redis.call('HSET', P .. 'state:' .. bucket, field, state, extra[1], extra[2])
    with_state[seq] = nil
  else
    redis.call('HSET', P .. 'state:' .. bucket, field, state)
  end
end

-- forget the state of finished tasks, and the record of the unique value each held (field
-- "u<field>", _unique.lua): one HDEL per bucket
local function drop_states(seqs)
  local groups, buckets = by_bucket(seqs)
  for _, bucket in ipairs(buckets) do
    local fields = groups[bucket]
    for k = 1, #fields do fields[#fields + 1] = 'u' .. fields[k] end
    call_in_chunks('HDEL', P .. 'state:' .. bucket, fields)
  end
end

-- PEXPIRE's GT and NX (Redis 7): an expiry is lengthened in one call, without reading it first
local EXPIRE_GT = (redis.REDIS_VERSION_NUM or 0) >= 0x070000

-- keep outcomes[k] of seqs[k] for at least ttl seconds: one HSET and one PEXPIRE per bucket (a
-- bucket's expiry is never shortened: workers may keep outcomes for different times)
local function keep_outcomes(seqs, outcomes, ttl)
  if ttl <= 0 or #seqs == 0 then return end
  local groups, buckets = by_bucket(seqs, outcomes)
  local ms = math.ceil(ttl * 1000)
  for _, bucket in ipairs(buckets) do
    local key = P .. 'outcome:' .. bucket
    call_in_chunks('HSET', key, groups[bucket])
    if EXPIRE_GT then -- GT leaves a key with no expiry (a new bucket) alone: NX sets that one
      if redis.call('PEXPIRE', key, ms, 'GT') == 0 then redis.call('PEXPIRE', key, ms, 'NX') end
    elseif redis.call('PTTL', key) < ms then
      redis.call('PEXPIRE', key, ms)
    end
  end
end

local function drop_outcome(seq)
  local bucket, field = bucket_of(seq)
  redis.call('HDEL', P .. 'outcome:' .. bucket, field)
end

-- a cron schedule's run times ARGV[from..] (oldest first) join its stored times (P..'rec_times:<name>',
-- a ZSET of times scored by themselves), and the last becomes its `through` (see cron_refill.lua)
local function store_cron_times(name, from)
  if #ARGV < from then return end
  local scored = {}
  for i = from, #ARGV do
    scored[#scored + 1] = ARGV[i]
    scored[#scored + 1] = ARGV[i]
  end
  call_in_chunks('ZADD', P .. 'rec_times:' .. name, scored)
  redis.call('HSET', P .. 'rec:' .. name, 'through', ARGV[#ARGV])
end

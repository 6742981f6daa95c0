-- Lanes: where ready tasks wait, in turns, under the limits of their keys (needs _prelude.lua,
-- _store.lua).
--
-- Every ready task is in one lane: a task enqueued with a key (a crawler's domain) in the lane of
-- that key, every other task in the unkeyed lane "". Within a lane, tasks go by priority, FIFO
-- within one. Between lanes, dispatch goes round-robin: a lane that was just served goes behind
-- every other lane that may start a task now.
--
-- Keys (K is a task key):
--   prios, ready:<level>  the unkeyed lane: levels with ready tasks (ZSET, score -priority) and
--                         each level's envelopes (LIST); as they were before keys existed
--   kp:<K>, kq:<K>:<level>  the same, for the lane of key K
--   turns     ZSET lane -> turn number: lanes whose next task may start now; the lowest is served
--             next, and a lane served goes to the back (the highest number + 1)
--   later     ZSET lane -> time (ms_text): lanes whose next task must wait for its key's rate or a throttle
--             (a lane at its key's concurrency limit is in neither: one of its tasks ending puts
--             it back), so that dispatch never looks at a lane that cannot start a task
--   limits    HASH K -> limit "<concurrency>|<rate>|<per>|<burst>|<adaptive 1/0>" ("" = none);
--             config field default_limit: the limit of every key without its own entry
--   ks:<K>    HASH run (tasks of K running), tat (the GCRA theoretical arrival time), until
--             (throttled until then), rate (the adaptive rate now, if lowered): times exact, not
--             in ms, as the rate's arithmetic needs them; it expires once
--             the lane is empty, nothing of it runs, and its times have passed
--   kl:<K>    LIST start times of K, newest first, for a limit with burst > 1 (floor(rate) kept)
--   kqueued   STRING how many keyed tasks are ready (counts)
--
-- Rates are a GCRA (generic cell rate algorithm): a start at `now` is allowed once now >= tat -
-- (burst - 1) * per / rate, and moves tat to max(tat, now) + per / rate. With burst 1 that spaces
-- starts at least per / rate apart, so no window of `per` seconds holds more than `rate` starts.
-- A burst above 1 lets that many start at once; the start log kl:<K> then keeps any window of
-- `per` seconds to `rate` starts.

-- a well-formed envelope's lane: a keyed envelope's body starts with "@<key>|"
local function lane_of(envelope)
  local first = string.find(envelope, '|', 1, true)
  local second = string.find(envelope, '|', first + 1, true)
  local third = string.find(envelope, '|', second + 1, true)
  if string.byte(envelope, third + 1) ~= 64 then return '' end
  local bar = string.find(envelope, '|', third + 2, true)
  return bar and string.sub(envelope, third + 2, bar - 1) or ''
end

local function lane_prios(lane)
  if lane == '' then return P .. 'prios' end
  return P .. 'kp:' .. lane
end

local function lane_list(lane, level)
  if lane == '' then return P .. 'ready:' .. level end
  return P .. 'kq:' .. lane .. ':' .. level
end

-- "<concurrency>|<rate>|<per>|<burst>|<adaptive>" -> a table, or false for none
local function parse_limit(text)
  if not text or text == '' then return false end
  local f = {}
  for field in string.gmatch(text .. '|', '([^|]*)|') do f[#f + 1] = field end
  local limit = {concurrency = tonumber(f[1]), rate = tonumber(f[2]), per = tonumber(f[3]) or 1,
    burst = math.max(tonumber(f[4]) or 1, 1), adaptive = f[5] == '1'}
  if limit.rate and not (limit.rate > 0 and limit.per > 0) then limit.rate = nil end
  if limit.concurrency and not (limit.concurrency >= 1) then limit.concurrency = nil end -- damaged by hand
  if not limit.concurrency and not limit.rate then return false end
  return limit
end

local limit_cache = {}
local default_limit = nil
local has_own_limits = nil
on_call(function() limit_cache, default_limit, has_own_limits = {}, nil, nil end)

-- where a keyed lane is: 'turns', 'later' or false (in neither), read once (the reads check both
-- keys before anything is written) and kept by place_lane, the one thing that moves lanes until a
-- claim takes its turns: take_ready forgets them all
local places = {}
on_call(function() places = {} end)
local function lane_place(lane)
  if places[lane] == nil then
    local in_turns, in_later = read('ZSCORE', P .. 'turns', lane), read('ZSCORE', P .. 'later', lane)
    places[lane] = (in_turns and 'turns') or (in_later and 'later') or false
  end
  return places[lane]
end
-- whether any key has a limit of its own (the limits HASH exists), once a call
local function any_own_limits()
  if has_own_limits == nil then has_own_limits = not absent.limits and redis.call('EXISTS', P .. 'limits') == 1 end
  return has_own_limits
end

-- the limit of a key (its own, else the queue's default), or false when it has none; read once a
-- call (limits and config are checked by these reads)
local function limit_of(lane)
  if lane == '' then return false end
  if limit_cache[lane] == nil then
    local own = any_own_limits() and read('HGET', P .. 'limits', lane)
    if own then
      limit_cache[lane] = parse_limit(own)
    else
      if default_limit == nil then default_limit = parse_limit(queue_settings()[2]) end
      limit_cache[lane] = default_limit
    end
  end
  return limit_cache[lane]
end

-- `change` more keyed tasks are ready: added up over the call, and written once at its end.
-- kqueued holds only a count, which nothing but counts.lua reads: anything else found there
-- (written by hand) is dropped, and counting starts again
local keyed_change = 0
on_call(function() keyed_change = 0 end)
local function count_keyed(change)
  keyed_change = keyed_change + change
end
at_call_end(function()
  if keyed_change == 0 or pcall(redis.call, 'INCRBY', P .. 'kqueued', keyed_change) then return end
  redis.call('DEL', P .. 'kqueued')
  redis.call('INCRBY', P .. 'kqueued', keyed_change)
end)

-- the keys a task of keyed `lane` may write when it ends (lane_released), checked (see expect)
local function expect_lane_end(lane)
  local limit = limit_of(lane)
  lane_place(lane)
  expect(P .. 'ks:' .. lane, 'hash')
  if limit and limit.burst > 1 then expect(P .. 'kl:' .. lane, 'list') end -- only a burst keeps a start log
end

-- levels known to be in their lane's prios in this call ("<prios key>|<level>" -> true), read by
-- expect_lane: making a task ready there needs no ZADD (take_from_lane forgets a level it removes)
local listed_levels = {}
on_call(function() listed_levels = {} end)

-- the keys a task of `lane` at `level` may write when it is made ready, checked (see expect); the
-- read of its level in prios checks that key. A keyed lane in the turns or in `later` stays there
-- (place_lane): only one in neither has its state and limit read to place it. A caller that also
-- ends a task of the lane checks that with expect_lane_end.
local function expect_lane(lane, level)
  local prios = lane_prios(lane)
  local listed = prios .. '|' .. level
  if listed_levels[listed] == nil then listed_levels[listed] = read('ZSCORE', prios, level) ~= false end
  expect(lane_list(lane, level), 'list')
  if lane == '' then
    expect_keys('turns')
  elseif not lane_place(lane) then
    expect_lane_end(lane)
  end
end

-- a key's state: {run = tasks of it running, tat = its GCRA time, until_time = throttled until
-- then, rate = its adaptive rate (nil if not lowered)}; the read checks ks:<K>
local function lane_state(lane)
  local st = read('HMGET', P .. 'ks:' .. lane, 'run', 'tat', 'until', 'rate')
  return {run = tonumber(st[1]) or 0, tat = tonumber(st[2]) or 0, until_time = tonumber(st[3]) or 0,
    rate = tonumber(st[4])}
end

-- when the next task of a keyed lane may start (a time, possibly past), or nil while the key is
-- at its concurrency limit; `state` is read if not given (lane_state)
local function next_start(lane, limit, state)
  state = state or lane_state(lane)
  if limit and limit.concurrency and state.run >= limit.concurrency then return nil end
  local at = state.until_time
  if limit and limit.rate then
    local interval = limit.per / (state.rate or limit.rate)
    at = math.max(at, state.tat - (limit.burst - 1) * interval)
    local window = math.floor(limit.rate)
    if limit.burst > 1 and read('LLEN', P .. 'kl:' .. lane) >= window then
      at = math.max(at, (tonumber(read('LINDEX', P .. 'kl:' .. lane, window - 1)) or 0) + limit.per)
    end
  end
  return at
end

-- `count` tasks of a keyed lane with a limit started at `now`: count them running, and move its
-- rate on; `state` (lane_state, which read ks:<K>, and kl:<K> if next_start needed it) follows
local function lane_started(lane, limit, count, now, state)
  local ks = P .. 'ks:' .. lane
  state.run = state.run + count
  if limit.rate then
    state.tat = math.max(state.tat, now) + count * limit.per / (state.rate or limit.rate)
    redis.call('HSET', ks, 'run', state.run, 'tat', string.format('%.17g', state.tat))
  else
    redis.call('HSET', ks, 'run', state.run)
  end
  redis.call('PERSIST', ks) -- an idle lane's state was set to expire
  if limit.rate and limit.burst > 1 then
    local kl, times = P .. 'kl:' .. lane, {}
    for k = 1, count do times[k] = string.format('%.17g', now) end
    call_in_chunks('LPUSH', kl, times)
    redis.call('LTRIM', kl, '0', math.floor(limit.rate) - 1)
    redis.call('PERSIST', kl)
  end
end

-- a lane with no ready task and nothing running keeps its state only while its times matter;
-- `state` is read if not given (lane_state)
local function lane_idle(lane, now, state)
  state = state or lane_state(lane)
  if state.run > 0 then return end
  local ks, kl = P .. 'ks:' .. lane, P .. 'kl:' .. lane
  local until_time = math.max(state.tat, state.until_time)
  local limit = limit_of(lane)
  local newest = limit and limit.burst > 1 and tonumber(read('LINDEX', kl, '0'))
  if newest then until_time = math.max(until_time, newest + limit.per) end
  if state.rate then until_time = math.max(until_time, now + 600) end -- a lowered rate is remembered a while
  local ms = math.ceil((until_time - now) * 1000)
  if ms <= 0 then
    redis.call('DEL', ks, kl)
  else
    redis.call('PEXPIRE', ks, ms)
    if newest then redis.call('PEXPIRE', kl, ms) end
  end
end

local function add_turn(lane)
  local last = tonumber(redis.call('ZRANGE', P .. 'turns', '-1', '-1', 'WITHSCORES')[2]) or 0
  redis.call('ZADD', P .. 'turns', last + 1, lane)
end

-- put a lane that has ready tasks where dispatch will find it (unless it is there already);
-- returns true if a waiting consumer should look: the lane is the unkeyed one (each of its tasks
-- may start), or a keyed lane that may now start a task, or is now the first lane to wait for a
-- time. `now` may be nil (then the clock is read if needed).
local function place_lane(lane, now)
  if lane == '' then
    if not redis.call('ZSCORE', P .. 'turns', lane) then add_turn(lane) end
    return true
  end
  if lane_place(lane) then return false end
  now = now or clock()
  local at = next_start(lane, limit_of(lane))
  if at == nil then return false end -- at its concurrency limit
  if at > now then
    local first, score = first_score('later'), ms_text(at) -- the caller checked later
    redis.call('ZADD', P .. 'later', score, lane)
    added_at('later', tonumber(score))
    places[lane] = 'later'
    return first == nil or tonumber(score) < first
  end
  add_turn(lane)
  places[lane] = 'turns'
  return true
end

-- a lane after its turn: to the back of the turns, or where its limits put it, or out if it has
-- no ready task left (`left` false). `state`: a keyed lane's state after the turn (lane_state).
-- `waited`: the lane had its turn straight from `later` (take_ready), where it still is; else it
-- had it from the turns (a lane in the turns is never in `later` too).
local function after_turn(lane, now, left, state, waited)
  local at = nil
  if left then
    at = now
    if lane ~= '' then at = next_start(lane, limit_of(lane), state) end
  end
  if at and at > now then -- waits (again): a new time in `later` replaces the one it had there
    if not waited then redis.call('ZREM', P .. 'turns', lane) end
    local score = ms_text(at)
    redis.call('ZADD', P .. 'later', score, lane)
    added_at('later', tonumber(score))
    return
  end
  redis.call('ZREM', P .. (waited and 'later' or 'turns'), lane)
  if not left then
    if lane ~= '' then lane_idle(lane, now, state) end
  elseif at then
    add_turn(lane)
  end -- else at its concurrency limit: one of its tasks ending puts it back
end

-- A keyed task started while its key had a limit holds one of the key's slots (ks:<K> run) for
-- as long as its lease: its lease token ends with SLOT_MARK, so that whatever ends the lease frees
-- the slot it took, and only that (a key without a limit keeps no state for its tasks).
local SLOT_MARK = '+'
local function holds_slot(token)
  return string.sub(token, -1) == SLOT_MARK
end

-- a task of a keyed lane stopped running: its slot is free (a lane in the turns or waiting in
-- `later` is where it belongs already)
local function lane_released(lane, now)
  local ks = P .. 'ks:' .. lane
  if redis.call('HINCRBY', ks, 'run', '-1') < 0 then redis.call('HSET', ks, 'run', '0') end -- released twice (by hand)
  if lane_place(lane) then return end
  if redis.call('EXISTS', lane_prios(lane)) == 1 then
    place_lane(lane, now)
  else
    lane_idle(lane, now)
  end
end

-- the lanes of `later` whose time came, in the order of their times (at most 1000 per call)
local function due_lanes(now)
  local through = due_ms(now)
  if not due_by('later', tonumber(through)) then return {} end
  return read('ZRANGEBYSCORE', P .. 'later', '-inf', through, 'LIMIT', '0', '1000')
end

-- lanes due[from..] leave `later` and join the back of the turns (unless there already), in order
local function promote(due, from)
  if from > #due then return end
  local moving = {unpack(due, from)}
  call_in_chunks('ZREM', P .. 'later', moving)
  local last = tonumber(read('ZRANGE', P .. 'turns', '-1', '-1', 'WITHSCORES')[2]) or 0
  for first = 1, #moving, 500 do
    local scored = {}
    for k = first, math.min(first + 499, #moving) do
      scored[#scored + 1] = last + k
      scored[#scored + 1] = moving[k]
    end
    redis.call('ZADD', P .. 'turns', 'NX', unpack(scored))
  end
end

-- a keyed task was throttled for `seconds`: its lane takes no task until then; an adaptive limit
-- halves the key's rate (down to a sixteenth of its limit)
local function lane_throttled(lane, seconds, now)
  local ks = P .. 'ks:' .. lane
  local state = lane_state(lane)
  redis.call('HSET', ks, 'until', string.format('%.17g', math.max(state.until_time, now + seconds)))
  local limit = limit_of(lane)
  if limit and limit.rate and limit.adaptive then
    redis.call('HSET', ks, 'rate', string.format('%.17g', math.max((state.rate or limit.rate) / 2, limit.rate / 16)))
  end
end

-- a keyed task succeeded: an adaptive limit's lowered rate climbs back by a 32nd of its limit
local function lane_succeeded(lane)
  local limit = limit_of(lane)
  if not (limit and limit.rate and limit.adaptive) then return end
  local ks = P .. 'ks:' .. lane
  local rate = tonumber(read('HGET', ks, 'rate'))
  if not rate then return end
  rate = rate + limit.rate / 32
  if rate >= limit.rate then
    redis.call('HDEL', ks, 'rate')
  else
    redis.call('HSET', ks, 'rate', string.format('%.17g', rate))
  end
end

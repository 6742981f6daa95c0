-- Making tasks ready or scheduled, and waking waiting consumers (needs _prelude.lua, _store.lua,
-- _lanes.lua).
--
-- Keys: the lanes' keys (_lanes.lua), P..'scheduled', P..'idle', P..'wake', P..'config',
-- P..'leases', and the state buckets of _store.lua.
--
-- Waking is best effort: a broken `idle` or `wake` key (the wrong type) must not fail what was
-- stored, so scripts call the waking helpers under pcall; consumers then find new work when
-- their wait ends by itself, and their exchanges report the key.
--
-- Waking: a consumer that asked for work and got none is entered in `idle` until the end of the
-- wait it announced, then blocks in BLPOP on `wake`. New work pushes wake tokens there; a token
-- goes to a consumer that is blocked now, so a process that died (its connection closed) is
-- never woken, and no task is ever handed to anybody here: the woken consumer claims by itself.
-- A process that is stopped but still connected can swallow a token: when more consumers are
-- waiting than there is new work, one spare token goes out, and a consumer whose wait ends
-- looks for work by itself.

local function mark_level(lane, level)
  local prios = lane_prios(lane)
  if listed_levels[prios .. '|' .. level] then return end -- there already (expect_lane read it)
  local rank = level_rank(level)
  redis.call('ZADD', prios, rank == -math.huge and '-inf' or rank, level)
  listed_levels[prios .. '|' .. level] = true
end

-- make a task ready at the back of its lane's level (at the front, to run next); the caller has
-- checked the lane's keys (expect_lane) and the task's state bucket. Returns true if a waiting
-- consumer should look (place_lane in _lanes.lua); `now` may be nil (then the clock is read).
local function push_ready(level, envelope, front, now)
  local lane = lane_of(envelope)
  redis.call(front and 'LPUSH' or 'RPUSH', lane_list(lane, level), envelope)
  mark_level(lane, level)
  set_state(seq_of(envelope), 'q')
  if lane ~= '' then count_keyed(1) end
  return place_lane(lane, now)
end

-- make tasks of one lane and level ready at its back, in order: one call per key for the lot
local function push_ready_many(lane, level, envelopes, now)
  call_in_chunks('RPUSH', lane_list(lane, level), envelopes)
  mark_level(lane, level)
  local seqs = {}
  for k, envelope in ipairs(envelopes) do seqs[k] = seq_of(envelope) end
  set_states(seqs, 'q')
  if lane ~= '' then count_keyed(#envelopes) end
  return place_lane(lane, now)
end

-- push wake tokens so that up to n waiting consumers (plus a spare, see above) look for work;
-- `now` may be nil (the clock is read only if somebody waits)
local function wake(n, now)
  if n <= 0 or redis.call('EXISTS', P .. 'idle') == 0 then return end -- nobody waits: the common case
  redis.call('ZREMRANGEBYSCORE', P .. 'idle', '-inf', due_ms(now or clock()))
  local waiting = redis.call('ZCARD', P .. 'idle')
  local wanted = math.min(n, waiting)
  if waiting > wanted then wanted = wanted + 1 end
  for _ = 1, wanted - redis.call('LLEN', P .. 'wake') do
    redis.call('RPUSH', P .. 'wake', '1')
  end
end

-- delay a task; if it is now the first due, wake a consumer so that it waits for the right time
local function schedule(level, envelope, due, now)
  local first = first_score('scheduled') -- the caller checked the key
  redis.call('ZADD', P .. 'scheduled', due, level .. '|' .. envelope)
  added_at('scheduled', due)
  set_state(seq_of(envelope), 's')
  if not first or due < first then pcall(wake, 1, now) end -- best effort: see enqueue.lua
end

-- free slots of the queue's cap, or nil when it has none
local function free_slots()
  local cap = queue_settings()[1]
  if not cap then return nil end
  return math.max(tonumber(cap) - redis.call('ZCARD', P .. 'leases'), 0)
end

-- wake waiting consumers for the ready work the cap lets start (after settling or claiming): a
-- task of each lane in turn, and every task of the unkeyed lane's top level
local function wake_for_ready(now)
  if redis.call('EXISTS', P .. 'idle') == 0 or queue_settings()[3] then return end -- nobody waits, or nothing may start
  local startable = redis.call('ZCARD', P .. 'turns')
  local top = redis.call('ZRANGE', P .. 'prios', '0', '0')[1]
  if top then startable = startable - 1 + redis.call('LLEN', P .. 'ready:' .. top) end
  if startable <= 0 then return end
  local free = free_slots()
  if free then startable = math.min(startable, free) end
  wake(startable, now)
end

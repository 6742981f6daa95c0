-- Settling the claims a worker finished (needs _prelude.lua, _store.lua, _unique.lua, _lanes.lua,
-- _queue.lua, _leases.lua).
--
-- Keys: P..'inflight', P..'leases', P..'failed' (HASH seq -> "<level>|<envelope>" of a task
-- failed for good), P..'failed_info' (HASH seq -> failure record), the state and outcome buckets,
-- and those of _queue.lua for retries and hand-backs.
--
-- Settlements are ARGV groups of 6 from index `from`: kind, seq, token, data, failure record, the
-- number of follow-up tasks (_enqueue.lua groups after every settlement, in settlement order:
-- exchange.lua enqueues them when the settlement applies). kind "d" done (data: outcome), "f" failed for good (data: outcome; record), "r" retry (data:
-- delay seconds), "b" hand back unfinished, to the front of its level (data unused), "t" throttled
-- (data: seconds): no attempt counted; a keyed task goes back to the front of its lane and its
-- key takes no task for that long, an unkeyed one waits that long alone.
-- Each applies only if its token still holds the task's lease, and at most once per call. Every
-- key a settlement writes is checked before the first write (see expect in _store.lua). The
-- bookkeeping of the whole batch is one call per key, not a few per task: a call from Lua costs
-- more than the work it does on these small keys.

-- a task goes back into its lane now (to the front if `front`), or after `delay` seconds
local function requeue(level, envelope, delay, now, front)
  if delay > 0 then
    schedule(level, envelope, now + delay, now)
  else
    push_ready(level, envelope, front, now)
  end
end

-- a failed attempt goes back, now or after `delay`, with one more failure counted
local function retry(level, envelope, delay, now)
  local seq, failures, crashes, body = envelope_fields(envelope)
  requeue(level, envelope_of(seq, failures + 1, crashes, body), delay, now, false)
end

-- the settlements that hold their lease (`leases`, from settling_leases), but those of `skip`:
-- {seq, kind, index in ARGV, level, envelope, k, lane}, with the keys they will write checked
-- (outcomes only if kept: `ttl` > 0)
local function holding(from, seqs, leases, skip, ttl)
  local settling = {}
  for k, seq in ipairs(seqs) do
    local i = from + (k - 1) * 6
    if leases[k] and not skip[k] then
      local _, level, rest = lease_fields(leases[k])
      local lane = is_envelope(rest) and lane_of(rest) or ''
      local entry = {seq, ARGV[i], i, level, false, k, lane}
      if lane ~= '' then expect_lane_end(lane) end
      local finished = ARGV[i] == 'd' or ARGV[i] == 'f'
      if ARGV[i] ~= 'd' then -- only these need the lease's envelope
        entry[5] = checked(rest)
        if seq_of(entry[5]) ~= seq then finished = true end -- a damaged lease: its own state goes
        if ARGV[i] == 'f' then
          expect_keys('failed', 'failed_info')
        else
          expect_keys('scheduled')
          expect_lane(lane_of(entry[5]), level)
          expect_buckets({seq_of(entry[5])})
        end
      end
      if finished then expect_unique_release({seq}) end -- its read checks the state bucket
      expect_buckets({seq}, ttl > 0 and (ARGV[i] == 'd' or ARGV[i] == 'f'))
      settling[#settling + 1] = entry
    end
  end
  return settling
end

-- a throttled task: see the header
local function throttle(level, envelope, lane, seconds, now)
  if lane ~= '' then
    lane_throttled(lane, seconds, now)
    push_ready(level, envelope, true, now)
  else
    requeue(level, envelope, seconds, now, true)
  end
end

-- the seqs of the `count` settlements from `from`, and the lease (inflight entry) of each that
-- holds it: the first settlement of a seq whose token holds the lease; false for every other (the
-- read checks inflight)
local function settling_leases(from, count)
  local seqs = {}
  for k = 1, count do seqs[k] = ARGV[from + (k - 1) * 6 + 1] end
  if count == 0 then return seqs, {} end
  local leases, seen = read('HMGET', P .. 'inflight', unpack(seqs)), {}
  for k, seq in ipairs(seqs) do
    if seen[seq] or not (leases[k] and token_of(leases[k]) == ARGV[from + (k - 1) * 6 + 2]) then
      leases[k] = false
    else
      seen[seq] = true
    end
  end
  return seqs, leases
end

-- the follow-up tasks of the done settlements that hold their lease: each task's first ARGV index,
-- and those settlements ({k = true}); the tasks follow the `count` settlements from `from`
local function follow_ups(from, count, leases)
  local starts, owners, at = {}, {}, from + count * 6
  for k = 1, count do
    local i = from + (k - 1) * 6
    local tasks = tonumber(ARGV[i + 5]) or 0
    if leases[k] and ARGV[i] == 'd' and tasks > 0 then
      owners[k] = true
      for j = 0, tasks - 1 do starts[#starts + 1] = at + j * 6 end
    end
    at = at + tasks * 6
  end
  return starts, owners
end

-- returns one "1" (applied), "0" (the lease had moved on) or "e" (in `skip`: not applied, its
-- follow-up tasks were refused) per settlement, as one string
local function settle(from, seqs, leases, skip, now, ttl)
  if #seqs == 0 then return '' end
  local settling = holding(from, seqs, leases, skip, ttl)
  if #settling > 0 then
    first_score('leases') -- the read checks the key (and the claim after this needs it)
    expect_keys('cancel_run')
  end
  local applied, ended, lanes, finished, kept, outcomes = {}, {}, {}, {}, {}, {}
  for k = 1, #seqs do applied[k] = skip[k] and 'e' or '0' end
  for _, entry in ipairs(settling) do
    local seq, kind, i, level, envelope, lane = entry[1], entry[2], entry[3], entry[4], entry[5], entry[7]
    applied[entry[6]] = '1'
    ended[#ended + 1] = seq
    if holds_slot(ARGV[i + 2]) then lanes[#lanes + 1] = lane end
    if kind == 'd' or kind == 'f' then
      finished[#finished + 1] = seq
      kept[#kept + 1] = seq
      outcomes[#outcomes + 1] = ARGV[i + 3]
    end
    if kind ~= 'd' and seq_of(envelope) ~= seq then finished[#finished + 1] = seq end -- a damaged lease: its own state goes
    if kind == 'r' then
      retry(level, envelope, tonumber(ARGV[i + 3]) or 0, now)
    elseif kind == 'b' then
      push_ready(level, envelope, true, now)
    elseif kind == 't' then
      throttle(level, envelope, lane, tonumber(ARGV[i + 3]) or 0, now)
    elseif kind == 'f' then
      redis.call('HSET', P .. 'failed', seq, level .. '|' .. envelope)
      redis.call('HSET', P .. 'failed_info', seq, ARGV[i + 4])
    elseif lane ~= '' then
      lane_succeeded(lane)
    end
  end
  end_leases(ended, lanes, now)
  drop_states(finished)
  release_unique(now)
  keep_outcomes(kept, outcomes, ttl)
  return table.concat(applied)
end

-- The workers' per-minute counts of tasks done, failed and retried (Exchange.tally), kept for the
-- charts a day: P..'hist:<hour>' HASH "<minute of the hour>d" / "f" / "r" -> count, one key an
-- hour (epoch seconds // 3600), expiring HISTORY_KEY_SECONDS (25 h) after its last write, so that
-- a day of minutes is always there (memory_queue.py HISTORY_MINUTES keeps the same). `text` is groups
-- "<minute> <done> <failed> <retried>" joined by ";". Best effort: a history key of the wrong
-- type loses these counts, never the exchange that carries them (call it with pcall).
local HISTORY_KEY_SECONDS = '90000'
local TALLY_KINDS = {'d', 'f', 'r'}
local function add_tally(text)
  for minute, done, failed, retried in string.gmatch(text, '(%d+) (%d+) (%d+) (%d+)') do
    local key = P .. 'hist:' .. string.format('%d', math.floor(tonumber(minute) / 60))
    local field = string.format('%d', tonumber(minute) % 60)
    for k, count in ipairs({done, failed, retried}) do
      if count ~= '0' then redis.call('HINCRBY', key, field .. TALLY_KINDS[k], count) end
    end
    redis.call('EXPIRE', key, HISTORY_KEY_SECONDS)
  end
end

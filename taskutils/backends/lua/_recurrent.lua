-- Firing recurrent schedules (needs _prelude.lua, _store.lua, _lanes.lua, _queue.lua): interval
-- grids and cron times, and what runs after downtime (misfire).
--
-- Keys: P..'rec' (ZSET name -> next run), P..'rec:<name>' (HASH body, interval, repeats, stop,
-- definition, cron, tz, misfire, max_catch_up, through, last), P..'rec_times:<name>' (ZSET a cron
-- schedule's next times, scored by themselves), P..'cron_low' (SET cron schedules short of times,
-- cron_refill.lua), and those of _queue.lua for the runs.

-- the first run after `now` on the grid at + k * interval: no drift
local function next_on_grid(at, interval, now)
  return at + interval * (math.floor((now - at) / interval) + 1)
end

local MISFIRE_GRACE = 30 -- a run found this many seconds after its time or sooner is on time (recurrent.py)
local CRON_LOW = 100 -- fewer stored cron times than this: workers compute more (cron_refill.lua)

-- how many runs start now for `count` due times, the latest `last`: the misfire rule
-- (recurrent.py due_runs): coalesce one, skip one only if on time, catch_up each (at most `most`)
local function due_runs(count, last, misfire, most, now)
  if count <= 0 then return 0 end
  if misfire == 'catch_up' then return math.min(count, most) end
  if misfire == 'skip' then return (now - last <= MISFIRE_GRACE) and 1 or 0 end
  return 1
end

-- a cron schedule's due times, taken out of its stored times (P..'rec_times:<name>', a ZSET of
-- times scored by themselves): {count, latest}, and its next time (math.huge when none is stored:
-- the schedule waits in cron_low for a worker to compute more)
local function cron_due(name, at, stop, now)
  local times_key = P .. 'rec_times:' .. name
  local due = redis.call('ZRANGEBYSCORE', times_key, '-inf', stop or now, 'LIMIT', '0', '100000')
  local count, last = 0, at
  for _, time in ipairs(due) do
    if tonumber(time) <= now then
      count, last = count + 1, tonumber(time)
    end
  end
  redis.call('ZREMRANGEBYSCORE', times_key, '-inf', now)
  local upcoming = tonumber(redis.call('ZRANGE', times_key, '0', '0', 'WITHSCORES')[2]) or math.huge
  if redis.call('ZCARD', times_key) < CRON_LOW then redis.call('SADD', P .. 'cron_low', name) end
  return count, last, upcoming
end

-- each due recurrent schedule queues its runs at the top priority, as its misfire rule says
-- (at most 100 schedules per call)
local function fire_due_recurrent(now)
  local fired = redis.call('ZRANGEBYSCORE', P .. 'rec', '-inf', now, 'WITHSCORES', 'LIMIT', '0', '100')
  if #fired > 0 then expect(P .. 'seq', 'string') end -- the runs take seqs between writes
  for i = 1, #fired, 2 do
    local name, at = fired[i], tonumber(fired[i + 1])
    local key = P .. 'rec:' .. name
    local spec = redis.call('HMGET', key, 'body', 'interval', 'repeats', 'stop', 'cron', 'misfire', 'max_catch_up')
    local body, interval, repeats, stop = spec[1], tonumber(spec[2]), tonumber(spec[3]) or 1, tonumber(spec[4] or '')
    local cron, misfire, most = spec[5] or '', spec[6] or 'coalesce', tonumber(spec[7]) or 100
    local ends = true
    if body and not (stop and at > stop) then -- a run past the schedule's stop: it just ends
      expect_keys('cron_low')
      expect_lane('', 'max')
      local count, last, upcoming = 1, at, at
      if cron ~= '' then
        expect(P .. 'rec_times:' .. name, 'zset')
        count, last, upcoming = cron_due(name, at, stop, now)
      elseif interval and interval > 0 and interval < math.huge then
        count = math.floor((now - at) / interval) + 1
        if stop then count = math.min(count, math.floor((stop - at) / interval) + 1) end
        last = at + (count - 1) * interval
        upcoming = next_on_grid(at, interval, now)
      else
        repeats = 1 -- a schedule with no valid interval runs once, then ends
      end
      local runs = due_runs(count, last, misfire, most, now)
      if repeats > 0 then
        runs = math.min(runs, repeats)
        repeats = repeats - runs
      end
      for _ = 1, runs do
        local seq = hex(new_seqs(1) + 1)
        expect_buckets({seq})
        push_ready('max', envelope_of(seq, 0, 0, body), false, now)
      end
      if runs > 0 then redis.call('HSET', key, 'last', string.format('%.17g', now)) end
      ends = repeats == 0 or (stop ~= nil and upcoming > stop) or (cron == '' and upcoming <= at)
      if not ends then
        redis.call('HSET', key, 'repeats', repeats)
        redis.call('ZADD', P .. 'rec', upcoming == math.huge and '+inf' or upcoming, name)
      end
    end
    if ends then
      redis.call('DEL', key, P .. 'rec_times:' .. name)
      redis.call('ZREM', P .. 'rec', name)
      redis.call('SREM', P .. 'cron_low', name)
    end
  end
end

-- Enqueueing tasks (needs _prelude.lua, _store.lua, _unique.lua, _lanes.lua, _queue.lua), in two
-- steps, so that a caller may check everything before anything is written: plan_enqueue reads
-- and checks every key the tasks will write (a key of the wrong type fails it with a WRONGTYPE
-- error, and nothing is written) and takes their sequence numbers; apply_enqueue writes.
-- Ready tasks go into their lanes (_lanes.lua), delayed ones into the schedule. A task with a
-- unique value that another task holds (_unique.lua) is not enqueued: its id is that task's.
-- Ready tasks are pushed with one call per key for the whole call, so a bulk enqueue costs a few
-- calls, not a few per task.
--
-- A task is 6 ARGV entries from its start index: level, delay seconds, key ("" for none), the
-- digest of the unique value ("" for none), unique_for seconds, msgpack body.

-- `starts`: each task's first ARGV index; `now` may be nil (the clock is read if needed). Nothing
-- is written: the tasks' sequence numbers are taken by apply_enqueue (where a step of the same
-- call between the two took one, as a damaged lease does, they come after it)
local function plan_enqueue(starts, now)
  local count = #starts
  local plan = {starts = starts, holders = {}, holds = {}, now = now, fresh = 0}
  local seq_text = read('GET', P .. 'seq')
  if seq_text and not string.find(seq_text, '^%d+$') then -- INCRBY would fail after other writes
    error({err = 'ERR ' .. P .. 'seq holds ' .. string.sub(seq_text, 1, 40) .. ' where taskutils keeps the last ' ..
      'sequence number: set it to a number above every id of the queue to serve it again'})
  end
  plan.first = tonumber(seq_text) or 0
  plan.epoch = stored_epoch()
  -- the unique values are looked up first (the reads check their hashes): a task whose value is
  -- held gets the holder's seq (or, held by an earlier task of this call, its index k) and is not
  -- looked at again; another takes the value, and the keys it will write are checked
  local taking = {}
  for k, i in ipairs(starts) do
    local unique = ARGV[i + 3]
    if unique ~= '' then
      plan.now = plan.now or clock()
      plan.holders[k] = taking[unique] or unique_holder(unique, plan.now)
      if not plan.holders[k] then
        taking[unique] = k
        plan.holds[#plan.holds + 1] = {unique, ARGV[i + 4], k}
      end
    end
    if not plan.holders[k] then
      plan.fresh = plan.fresh + 1
      if tonumber(ARGV[i + 1]) > 0 then expect_keys('scheduled') else expect_lane(ARGV[i + 2], ARGV[i]) end
    end
  end
  if plan.fresh > 0 then -- else every task's value is held (a crawler's links seen before): nothing is written
    for seq = plan.first + 1, plan.first + count, STATE_BUCKET do expect_buckets({hex(seq)}) end
    expect_buckets({hex(plan.first + count)})
  end
  return plan
end

-- task k's envelope (a keyed task's body starts with "@<key>|"), or nil when its unique value is
-- held: then its id is the holder's, given in `out` as a pair k, seq
local function new_envelope(plan, k, out)
  local holder = plan.holders[k]
  if holder then
    out[#out + 1] = k
    out[#out + 1] = type(holder) == 'number' and hex(plan.first + holder) or holder
    return nil
  end
  local i = plan.starts[k]
  local key, body = ARGV[i + 2], ARGV[i + 5]
  if key ~= '' then body = '@' .. key .. '|' .. body end
  return envelope_of(hex(plan.first + k), 0, 0, body)
end

-- the sequence numbers of a plan's tasks, taken now; if a step since the plan took one, the state
-- buckets of the numbers now taken are checked again (a read that fails here, on a bucket of the
-- wrong type, after that step wrote: only a damaged lease and a broken bucket together)
local function take_seqs(plan)
  if plan.fresh == 0 then return end
  local first = new_seqs(#plan.starts)
  if first == plan.first then return end
  plan.first = first
  expect_buckets({hex(first + 1)})
  expect_buckets({hex(first + #plan.starts)})
end

-- write what plan_enqueue checked; waiting consumers are woken if `waking` (else the caller wakes
-- them: plan.later_first says a lane of these tasks is now the first to wait in `later`). Returns {the queue's epoch, the sequence number before the first task's, then pairs k,
-- seq}: task k's id is <epoch>-<first + k in hex>, or <epoch>-<seq> when a pair names it
local function apply_enqueue(plan, waking)
  take_seqs(plan)
  local out = {plan.epoch or epoch(), plan.first}
  local holds = {}
  for n, hold in ipairs(plan.holds) do holds[n] = {hold[1], hold[2], hex(plan.first + hold[3])} end
  hold_unique(holds)
  local now = plan.now
  if #plan.starts == 1 then -- one task (one-by-one enqueue, the common case): no tables to build
    local i, envelope = plan.starts[1], new_envelope(plan, 1, out)
    if not envelope then return out end
    local delay = tonumber(ARGV[i + 1])
    if delay > 0 then
      now = now or clock()
      schedule(ARGV[i], envelope, now + delay, now)
    elseif push_ready(ARGV[i], envelope, false, now) then
      if waking then pcall(wake, 1) end
      if places[ARGV[i + 2]] == 'later' then plan.later_first = true end
    end
    return out
  end
  local groups, by_group, ready = {}, {}, 0
  for k, i in ipairs(plan.starts) do
    local level, delay, key = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
    local envelope = new_envelope(plan, k, out)
    if envelope and delay > 0 then
      now = now or clock()
      schedule(level, envelope, now + delay, now)
    elseif envelope then
      local group = key .. '|' .. level -- levels have no "|": this names one lane's level
      if not by_group[group] then
        by_group[group] = {}
        groups[#groups + 1] = {key, level, group}
      end
      table.insert(by_group[group], envelope)
    end
  end
  for _, group in ipairs(groups) do
    local lane, level, envelopes = group[1], group[2], by_group[group[3]]
    if push_ready_many(lane, level, envelopes, now) then
      ready = ready + (lane == '' and #envelopes or 1)
      if places[lane] == 'later' then plan.later_first = true end -- the first lane to wait for a time now
    end
  end
  if waking and ready > 0 then pcall(wake, ready, now) end
  return out
end

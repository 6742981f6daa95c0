-- Enqueue tasks: ready ones onto their priority's list, waking waiting consumers; delayed ones
-- into the schedule. Sequence numbers are taken in one INCRBY, and ready tasks are pushed with
-- one call per key for the whole call, so a bulk enqueue costs a few calls, not a few per task.
-- KEYS[1] - the queue's prefix P. Touches P .. epoch, seq, ready:<level>, prios, scheduled,
--           state:*, idle, wake (see _store.lua, _queue.lua)
-- ARGV    - triples: level, delay seconds, msgpack body
-- Every key written is checked before the first write (_store.lua): a key of the wrong type fails
-- the call with a WRONGTYPE error, and nothing is enqueued. Waking is best effort here: a broken
-- idle or wake key makes workers find the task by themselves (and report that key).
-- returns   {the queue's epoch, the sequence number before the first task's}: the tasks' ids are
--           <epoch>-<first + k in hex> for k = 1, 2, ...
refuse_when_full() -- Redis over maxmemory refuses the whole call (see _store.lua)
local count = #ARGV / 3
local first = new_seqs(count) -- seq and epoch fail here by themselves, before anything is written
for k = 1, count do
  local i = (k - 1) * 3 + 1
  expect_keys(tonumber(ARGV[i + 1]) > 0 and 'scheduled' or 'prios')
  expect(P .. 'ready:' .. ARGV[i], 'list')
end
for seq = first + 1, first + count, STATE_BUCKET do expect_buckets({hex(seq)}) end
expect_buckets({hex(first + count)})
local out = {epoch(), first}
local now = nil -- the server's clock, read only when needed

-- one task (one-by-one enqueue, the common case): no tables to build
if count == 1 then
  local envelope, delay = envelope_of(hex(first + 1), 0, 0, ARGV[3]), tonumber(ARGV[2])
  if delay > 0 then
    now = clock()
    schedule(ARGV[1], envelope, now + delay, now)
  else
    push_ready(ARGV[1], envelope)
    pcall(wake, 1)
  end
  return out
end

local levels, by_level, ready = {}, {}, 0
for k = 1, count do
  local i = (k - 1) * 3 + 1
  local level, envelope, delay = ARGV[i], envelope_of(hex(first + k), 0, 0, ARGV[i + 2]), tonumber(ARGV[i + 1])
  if delay > 0 then
    now = now or clock()
    schedule(level, envelope, now + delay, now)
  else
    if not by_level[level] then
      by_level[level] = {}
      levels[#levels + 1] = level
    end
    table.insert(by_level[level], envelope)
    ready = ready + 1
  end
end
for _, level in ipairs(levels) do push_ready_many(level, by_level[level]) end
if ready > 0 then pcall(wake, ready, now) end
return out

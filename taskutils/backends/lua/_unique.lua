-- Unique values of tasks (needs _prelude.lua, _store.lua): while a task with a unique value is
-- scheduled, queued or running, and for its unique_for seconds after it ends, enqueueing another
-- task with that value on the queue returns the first one's id instead.
--
-- Keys:
--   unique        HASH value -> seq of the task holding it
--   unique_of     HASH seq -> "<unique_for>|<value>" of each task holding a value that has not ended
--   unique_until  ZSET value -> the time its hold ends, for values kept after their task ended

local function expect_unique()
  expect_keys('unique', 'unique_of', 'unique_until')
end

-- the seq holding `value`, or nil; a hold whose time passed, or whose task's record is gone, is
-- dropped on the way
local function unique_holder(value, now)
  local seq = redis.call('HGET', P .. 'unique', value)
  if not seq then return nil end
  local ends = tonumber(redis.call('ZSCORE', P .. 'unique_until', value))
  if ends and ends > now then return seq end
  if not ends and redis.call('HEXISTS', P .. 'unique_of', seq) == 1 then return seq end
  redis.call('ZREM', P .. 'unique_until', value)
  redis.call('HDEL', P .. 'unique', value)
  return nil
end

local function hold_unique(value, seconds, seq)
  redis.call('HSET', P .. 'unique', value, seq)
  redis.call('HSET', P .. 'unique_of', seq, seconds .. '|' .. value)
  redis.call('ZREM', P .. 'unique_until', value)
end

-- tasks that ended (done, failed for good, cancelled) let their values go, or keep them for
-- their unique_for seconds
local function release_unique(seqs, now)
  if #seqs == 0 or redis.call('EXISTS', P .. 'unique_of') == 0 then return end
  local held = redis.call('HMGET', P .. 'unique_of', unpack(seqs))
  for k, text in ipairs(held) do
    if text then
      local bar = string.find(text, '|', 1, true)
      local seconds, value = tonumber(string.sub(text, 1, bar - 1)) or 0, string.sub(text, bar + 1)
      redis.call('HDEL', P .. 'unique_of', seqs[k])
      if redis.call('HGET', P .. 'unique', value) == seqs[k] then
        if seconds > 0 then
          redis.call('ZADD', P .. 'unique_until', now + seconds, value)
        else
          redis.call('HDEL', P .. 'unique', value)
        end
      end
    end
  end
end

-- drop holds whose time passed (at most 100 per call)
local function expire_unique(now)
  local gone = redis.call('ZRANGEBYSCORE', P .. 'unique_until', '-inf', now, 'LIMIT', 0, 100)
  if #gone == 0 then return end
  redis.call('HDEL', P .. 'unique', unpack(gone))
  redis.call('ZREM', P .. 'unique_until', unpack(gone))
end

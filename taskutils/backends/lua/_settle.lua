-- Settling the claims a worker finished (needs _prelude.lua, _store.lua, _queue.lua, _leases.lua).
--
-- Keys: P..'inflight', P..'leases', P..'failed' (HASH seq -> "<level>|<envelope>" of a task
-- failed for good), P..'failed_info' (HASH seq -> failure record), the state and outcome buckets,
-- and those of _queue.lua for retries and hand-backs.
--
-- Settlements are ARGV groups of 5 from index `from`: kind, seq, token, data, failure record.
-- kind "d" done (data: outcome), "f" failed for good (data: outcome; record), "r" retry (data:
-- delay seconds), "b" hand back unfinished, to the front of its level (data unused).
-- Each applies only if its token still holds the task's lease, and at most once per call.
-- The bookkeeping of the whole batch is one call per key, not a few per task: a call from Lua
-- costs more than the work it does on these small keys.

-- a failed attempt goes back, now or after `delay`, with one more failure counted
local function retry(level, envelope, delay, now)
  local seq, failures, crashes, body = envelope_fields(envelope)
  local again = envelope_of(seq, failures + 1, crashes, body)
  if delay > 0 then
    schedule(level, again, now + delay, now)
  else
    push_ready(level, again)
  end
end

-- returns one "1" (applied) or "0" (the lease had moved on) per settlement, as one string
local function settle(from, now, ttl)
  local seqs = {}
  for i = from, #ARGV, 5 do seqs[#seqs + 1] = ARGV[i + 1] end
  if #seqs == 0 then return '' end
  local leases = redis.call('HMGET', P .. 'inflight', unpack(seqs))
  local applied, ended, finished, kept, outcomes, seen = {}, {}, {}, {}, {}, {}
  for k, seq in ipairs(seqs) do
    local i = from + (k - 1) * 5
    local holds = leases[k] and not seen[seq] and token_of(leases[k]) == ARGV[i + 2]
    if holds then
      seen[seq] = true
      ended[#ended + 1] = seq
      local kind = ARGV[i]
      if kind == 'd' or kind == 'f' then
        finished[#finished + 1] = seq
        kept[#kept + 1] = seq
        outcomes[#outcomes + 1] = ARGV[i + 3]
      end
      if kind ~= 'd' then -- only these need the lease's level and envelope
        local _, level, envelope = lease_fields(leases[k])
        envelope = checked(envelope)
        if seq_of(envelope) ~= seq then finished[#finished + 1] = seq end -- a damaged lease: its own state goes
        if kind == 'r' then
          retry(level, envelope, tonumber(ARGV[i + 3]) or 0, now)
        elseif kind == 'b' then
          push_ready(level, envelope, true)
        else
          redis.call('HSET', P .. 'failed', seq, level .. '|' .. envelope)
          redis.call('HSET', P .. 'failed_info', seq, ARGV[i + 4])
        end
      end
    end
    applied[k] = holds and '1' or '0'
  end
  end_leases(ended)
  drop_states(finished)
  keep_outcomes(kept, outcomes, ttl)
  return table.concat(applied)
end

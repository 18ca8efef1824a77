-- One replica's renewal tick in one round trip: reclaim lapsed slots, re-add and extend each of its live
-- calls whatever the count (the limiter never drops a live call), renew or re-take their locks, flush
-- their states, write the replica heartbeat.
-- KEYS: slots, active_count, epoch, heartbeat, then for each call: lock, state
-- ARGV: lease_ms, lock_ttl_ms, state_ttl_s, recovery_holdoff_ms, heartbeat_json, heartbeat_ttl_ms,
--       then for each call: call_sid, lock_token, state_json ('' keeps the stored state, refreshing its TTL)
-- A call whose stored state has ended is skipped: it is over, and renewing it would resurrect its slot.
-- Returns {active, readded, lock_lost, reclaimed, epoch_created, ended}.
local slots = KEYS[1]
local now = now_ms()
local expired = reclaim(slots, now)
local _, epoch_created = open_epoch(KEYS[3], now, tonumber(ARGV[4]))
local deadline = now + tonumber(ARGV[1])
local lock_ttl = tonumber(ARGV[2])
local state_ttl = tonumber(ARGV[3])

local readded, lost, ended = {}, {}, {}

-- Ended for good: a lapsed lease (`lease_expired`) is not, since a paused replica's live call must
-- be able to come back.
local function has_ended(state_key)
  local stored = redis.call('GET', state_key)
  if not stored then
    return false
  end
  local ok, decoded = pcall(cjson.decode, stored)
  return ok and type(decoded) == 'table' and decoded['status'] == 'ended'
    and decoded['end_reason'] ~= 'lease_expired'
end

-- The lock is renewed if this stream owns it, re-taken if it vanished (Redis lost its data); the
-- state is written only by the lock's owner.
local function renew_lock_and_state(sid, token, state, lock_key, state_key)
  local owner = redis.call('GET', lock_key)
  if owner == token then
    redis.call('PEXPIRE', lock_key, lock_ttl)
  elseif not owner then
    redis.call('SET', lock_key, token, 'PX', lock_ttl)
  else
    lost[#lost + 1] = sid
    return
  end
  if state ~= '' then
    redis.call('SET', state_key, state, 'EX', state_ttl)
  else
    redis.call('EXPIRE', state_key, state_ttl)
  end
end

local calls = (#ARGV - 6) / 3
for i = 0, calls - 1 do
  local sid, token, state = ARGV[7 + 3 * i], ARGV[8 + 3 * i], ARGV[9 + 3 * i]
  local lock_key, state_key = KEYS[5 + 2 * i], KEYS[6 + 2 * i]
  if has_ended(state_key) then
    -- The call ended (its stream finished after this batch was built, or a final status
    -- callback came): renewing it would resurrect a released slot.
    ended[#ended + 1] = sid
  else
    if redis.call('ZADD', slots, 'GT', deadline, sid) == 1 then
      readded[#readded + 1] = sid
    end
    renew_lock_and_state(sid, token, state, lock_key, state_key)
  end
end

redis.call('SET', KEYS[4], ARGV[5], 'PX', ARGV[6])
return {sync_count(slots, KEYS[2]), readded, lost, expired, epoch_created, ended}

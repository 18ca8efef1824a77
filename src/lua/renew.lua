-- One replica's renewal tick in one round trip: reclaim lapsed slots, re-add and extend each of its live
-- calls whatever the count (the limiter never drops a live call), renew or re-take their locks, flush
-- their states, write the replica heartbeat.
-- KEYS: slots, active_count, epoch, heartbeat, then for each call: lock, state
-- ARGV: lease_ms, lock_ttl_ms, state_ttl_s, recovery_holdoff_ms, heartbeat_json, heartbeat_ttl_ms,
--       then for each call: call_sid, lock_token, state_json ('' keeps the stored state, refreshing its TTL)
-- Returns {active, readded, lock_lost, reclaimed, epoch_created}.
local slots = KEYS[1]
local now = now_ms()
local expired = reclaim(slots, now)
local _, epoch_created = open_epoch(KEYS[3], now, tonumber(ARGV[4]))
local deadline = now + tonumber(ARGV[1])
local lock_ttl = tonumber(ARGV[2])
local state_ttl = tonumber(ARGV[3])

local readded, lost = {}, {}
local calls = (#ARGV - 6) / 3
for i = 0, calls - 1 do
  local sid, token, state = ARGV[7 + 3 * i], ARGV[8 + 3 * i], ARGV[9 + 3 * i]
  local lock_key, state_key = KEYS[5 + 2 * i], KEYS[6 + 2 * i]
  if redis.call('ZADD', slots, 'GT', deadline, sid) == 1 then
    readded[#readded + 1] = sid
  end
  local owner = redis.call('GET', lock_key)
  if owner == token then
    redis.call('PEXPIRE', lock_key, lock_ttl)
  elseif not owner then
    redis.call('SET', lock_key, token, 'PX', lock_ttl)
  else
    lost[#lost + 1] = sid
  end
  if owner == token or not owner then
    if state ~= '' then
      redis.call('SET', state_key, state, 'EX', state_ttl)
    else
      redis.call('EXPIRE', state_key, state_ttl)
    end
  end
end

redis.call('SET', KEYS[4], ARGV[5], 'PX', ARGV[6])
return {sync_count(slots, KEYS[2]), readded, lost, expired, epoch_created}

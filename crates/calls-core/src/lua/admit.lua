-- Admit one call atomically: reclaim lapsed slots, then refresh the call's slot if it holds one, else
-- take a free one (counting started) or refuse (counting rejected_max_concurrent).
-- KEYS: slots, active_count, stats_started, stats_rejected_max_concurrent, epoch, state
-- ARGV: call_sid, limit, lease_ms, policy ('take' | 'existing'), recovery_holdoff_ms,
--       state_json ('' = none; written only with a new slot), state_ttl_s
-- Returns {code, active, reclaimed}: code 1 new slot, 2 already held, 0 at limit, -1 recovering,
-- -2 no slot held (policy 'existing').
local slots, count_key = KEYS[1], KEYS[2]
local sid = ARGV[1]
local limit = tonumber(ARGV[2])
local now = now_ms()
local expired = reclaim(slots, now)
local opens = open_epoch(KEYS[5], now, tonumber(ARGV[5]))
local deadline = now + tonumber(ARGV[3])

if redis.call('ZSCORE', slots, sid) then
  -- The new lease replaces the old one: a stream activating its reservation swaps the long wait
  -- for its stream for the short live-call lease its replica renews.
  redis.call('ZADD', slots, 'XX', deadline, sid)
  return {2, sync_count(slots, count_key), expired}
end
if ARGV[4] == 'existing' then
  return {-2, sync_count(slots, count_key), expired}
end
if now < opens then
  return {-1, sync_count(slots, count_key), expired}
end

local n = redis.call('ZCARD', slots)
if n < limit then
  redis.call('ZADD', slots, deadline, sid)
  redis.call('INCR', KEYS[3])
  redis.call('SET', count_key, n + 1)
  if ARGV[6] ~= '' then
    redis.call('SET', KEYS[6], ARGV[6], 'EX', ARGV[7])
  end
  return {1, n + 1, expired}
end
redis.call('INCR', KEYS[4])
redis.call('SET', count_key, n)
return {0, n, expired}

-- The voice webhook's admission, atomically: reclaim lapsed slots, then refresh the call's slot if it
-- holds one, else take a free one (counting started, writing the reserved state) or refuse (counting
-- rejected_max_concurrent).
-- KEYS: slots, active_count, stats_started, stats_rejected_max_concurrent, epoch, state
-- ARGV: call_sid, limit, lease_ms, policy ('take' | 'existing'), recovery_holdoff_ms,
--       state_json ('' = none; written only with a new slot), state_ttl_s, seen_epoch, open_wait (0|1),
--       tenant ('' = none), default_tenant_limit ('' = none)
-- Returns {code, active, reclaimed, epoch, reregister}: code as admit_slot's, or -3: the call already
-- ended for good (a webhook retried after its call finished takes no slot and keeps the final state).
local slots, count_key = KEYS[1], KEYS[2]
local now = now_ms()
local opens, epoch, lost = check_epoch(KEYS[5], slots, now, ARGV[8], ARGV[9] == '1',
  tonumber(ARGV[5]), false)
local expired = reclaim(slots, now)
-- Read once: the ended check and the admission both ask whether the call holds a slot.
local held = redis.call('ZSCORE', slots, ARGV[1])
if ARGV[6] ~= '' and held == false and ended_for_good(redis.call('GET', KEYS[6])) then
  return {-3, sync_count(slots, count_key), expired, epoch, lost}
end
local code, active = admit_slot(slots, count_key, KEYS[3], KEYS[4], ARGV[1], tonumber(ARGV[2]),
  now + tonumber(ARGV[3]), ARGV[4], now, opens, ARGV[10], ARGV[11], held)
if code == 1 and ARGV[6] ~= '' then
  redis.call('SET', KEYS[6], ARGV[6], 'EX', ARGV[7])
end
return {code, active, expired, epoch, lost}

-- A media stream's end in one atomic step: its final state, its slot freed (a second end frees nothing)
-- and its lock released. If another stream owns the lock now, the call lives on there: nothing changes.
-- A stream that ended in a way that continues (docs/reference.md#hand-over) keeps its slot instead,
-- for `hold_ms` from now: the continuation's stream takes it, a final status callback frees it, or
-- it lapses like a reservation. So no new call takes the place of a caller being handed over.
-- KEYS: slots, active_count, state, lock
-- ARGV: call_sid, lock_token, final_state_json, state_ttl_s, hold_ms (0: free the slot)
-- Returns {freed (1|0), owner ('' unless another stream owns the lock), held (1|0)}.
local owner = redis.call('GET', KEYS[4])
if owner and owner ~= ARGV[2] then
  return {0, owner, 0}
end
if owner then
  redis.call('DEL', KEYS[4])
end
-- A continuation granted meanwhile (docs/reference.md#after-stream) stays in the final state.
redis.call('SET', KEYS[3], keep_grant(redis.call('GET', KEYS[3]), ARGV[3]), 'EX', ARGV[4])
local hold = tonumber(ARGV[5])
local held = hold > 0 and tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or '')
local now = held and now_ms()
-- A slot that already lapsed (its replica was paused) is freed as before: it is no one's now.
if held and held > now then
  local deadline = now + hold
  redis.call('ZADD', KEYS[1], 'XX', deadline, ARGV[1])
  local held_by = slot_tenant(ARGV[1])
  if held_by then
    tenant_slot_set(ARGV[1], held_by, deadline)
  end
  sync_count(KEYS[1], KEYS[2])
  return {0, '', 1}
end
local freed = redis.call('ZREM', KEYS[1], ARGV[1])
tenant_slot_remove(ARGV[1])
sync_count(KEYS[1], KEYS[2])
return {freed, '', 0}

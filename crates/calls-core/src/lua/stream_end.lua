-- A media stream's end in one atomic step: its final state, its slot freed (a second end frees nothing)
-- and its lock released. If another stream owns the lock now, the call lives on there: nothing changes.
-- KEYS: slots, active_count, state, lock
-- ARGV: call_sid, lock_token, final_state_json, state_ttl_s
-- Returns {freed (1|0), owner ('' unless another stream owns the lock)}.
local owner = redis.call('GET', KEYS[4])
if owner and owner ~= ARGV[2] then
  return {0, owner}
end
if owner then
  redis.call('DEL', KEYS[4])
end
-- A continuation granted meanwhile (docs/reference.md#after-stream) stays in the final state.
redis.call('SET', KEYS[3], keep_grant(redis.call('GET', KEYS[3]), ARGV[3]), 'EX', ARGV[4])
local freed = redis.call('ZREM', KEYS[1], ARGV[1])
tenant_slot_remove(ARGV[1])
sync_count(KEYS[1], KEYS[2])
return {freed, ''}

-- Free a call's slot if it holds one; a second release finds nothing and changes nothing.
-- KEYS: slots, active_count, state
-- ARGV: call_sid
-- Returns {freed (1|0), state_open (1 if a stored state has not ended yet, so the caller ends it)}.
-- Ending the state is left to the caller: cjson cannot re-encode it faithfully (an empty list would
-- come back as an object), and a stream's end has usually written its final state already, so the
-- common release is this one round trip.
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
tenant_slot_remove(ARGV[1])
sync_count(KEYS[1], KEYS[2])
local state_open = 0
local stored = redis.call('GET', KEYS[3])
if stored then
  local ok, decoded = pcall(cjson.decode, stored)
  if ok and type(decoded) == 'table' and decoded['status'] ~= 'ended' then
    state_open = 1
  end
end
return {removed, state_open}

-- Free a call's slot if it holds one; a second release finds nothing and changes nothing.
-- KEYS: slots, active_count
-- ARGV: call_sid
-- Returns 1 if a slot was freed, else 0.
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
sync_count(KEYS[1], KEYS[2])
return removed

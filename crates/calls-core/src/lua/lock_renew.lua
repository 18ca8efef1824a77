-- Extend a call's lock only if `token` still owns it.
-- KEYS: lock; ARGV: token, ttl_ms
-- Returns 1 if extended, else 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0

-- Take a call's lock for `token`, or extend it if `token` already owns it.
-- KEYS: lock; ARGV: token, ttl_ms
-- Returns '' when taken, else the current owner's token.
local owner = redis.call('GET', KEYS[1])
if not owner then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ''
end
if owner == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return ''
end
return owner

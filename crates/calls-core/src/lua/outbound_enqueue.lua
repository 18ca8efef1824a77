-- Queues an outbound call at the tail, atomically (docs/reference.md#outbound), unless its
-- Idempotency-Key named a call within 24 h: then that call's record is answered and nothing new
-- is queued.
-- KEYS: record, queue, index, idempotency ('' key name when none is given: KEYS has 3 then)
-- ARGV: id, record_json, open_ttl_s, idempotency_ttl_s, index_horizon_ms
-- Returns {new (1|0), record_json}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if KEYS[4] then
  local first = redis.call('GET', KEYS[4])
  if first then
    local blob = redis.call('GET', outbound_key(first))
    if blob then
      return {0, blob}
    end
  end
  redis.call('SET', KEYS[4], ARGV[1], 'EX', ARGV[4])
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
redis.call('RPUSH', KEYS[2], ARGV[1])
-- The listing's order is the queue's: several calls queued within one ms must not tie (ties sort
-- by id), so each score is past the newest one's.
local newest = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
local score = now
if newest[2] and tonumber(newest[2]) >= score then
  score = tonumber(newest[2]) + 1
end
redis.call('ZADD', KEYS[3], score, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[5]))
return {1, ARGV[2]}

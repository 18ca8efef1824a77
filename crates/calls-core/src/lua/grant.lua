-- Records a continuation grant (docs/reference.md#after-stream) in one atomic step: the state the
-- grant was decided on (read by the replica) is replaced by the same state with `resumes` counted
-- and `resume_grant` set, unless it changed meanwhile or already counts `limit` resumes that were
-- not planned hand-overs (a first grant after a drain ended the stream is one, and needs no
-- budget). The replica builds the JSON because cjson cannot re-encode a whole state faithfully (an
-- empty list would come back as an object). A slot the call still holds (its stream's ending kept
-- it, or its dead replica's lease has not lapsed yet) is kept at least `hold_ms` from the grant,
-- for the continuation's stream (docs/reference.md#hand-over).
-- KEYS: state, slots ARGV: expected_json (the state as read), granted_json, state_ttl_s, limit,
-- call_sid, hold_ms
-- Returns 1 when written, 0 when the state changed (the replica decides again), -1 at the limit.
local stored = redis.call('GET', KEYS[1])
if stored ~= ARGV[1] then
  return 0
end
local ok, decoded = pcall(cjson.decode, stored)
if ok and type(decoded) == 'table' then
  local handover = decoded['status'] == 'ended' and decoded['end_reason'] == 'drain_timeout'
    and decoded['resume_grant'] == nil
  local failures = (tonumber(decoded['resumes']) or 0) - (tonumber(decoded['handovers']) or 0)
  if not handover and failures >= tonumber(ARGV[4]) then
    return -1
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
-- Only a slot still held and not yet lapsed (a lapsed one is another replica's to reclaim), and
-- never shortened (a live lease may run longer).
local now = now_ms()
local deadline = now + tonumber(ARGV[6])
local held = tonumber(redis.call('ZSCORE', KEYS[2], ARGV[5]) or '')
if held and held > now and held < deadline then
  redis.call('ZADD', KEYS[2], 'XX', deadline, ARGV[5])
  local held_by = slot_tenant(ARGV[5])
  if held_by then
    tenant_slot_set(ARGV[5], held_by, deadline)
  end
end
return 1

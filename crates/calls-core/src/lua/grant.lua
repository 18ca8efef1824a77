-- Records a continuation grant (docs/reference.md#after-stream) in one atomic step: the state the
-- grant was decided on (read by the replica) is replaced by the same state with `resumes` counted
-- and `resume_grant` set, unless it changed meanwhile or already counts `limit` resumes that were
-- not planned hand-overs (a first grant after a drain ended the stream is one, and needs no
-- budget). The replica builds the JSON because cjson cannot re-encode a whole state faithfully (an
-- empty list would come back as an object). KEYS: state ARGV: expected_json (the state as read),
-- granted_json, state_ttl_s, limit Returns 1 when written, 0 when the state changed (the replica
-- decides again), -1 at the limit.
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
return 1

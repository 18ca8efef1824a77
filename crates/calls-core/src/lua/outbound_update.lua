-- One change to an outbound call, atomically (docs/reference.md#outbound), by `op`:
--   'placed'  ARGV[5] call_sid: Twilio named the call; its slot moves from the id to the call SID
--   'report'  ARGV[5] status, ARGV[6] call_sid ('' = none): a status Twilio reported; forward only;
--             in-progress stamps answered_at; a final status stamps ended_at and frees the slot
--             held under the id (the call SID's slot is the status callback's release)
--   'fail'    ARGV[5] error_json: Twilio refused the request; failed, slot freed
--   'requeue' ARGV[5] backoff_ms: Twilio answered 429; back to the head of the queue, slot given
--             up, the cluster's next dial not before backoff_ms from now
--   'cancel'  a queued call is canceled; any other is left as it is
-- Leaving the in-flight set: any change that shows Twilio has the call answered or ended.
-- KEYS: record, slots, active_count, queue, inflight, pace, stats_started
-- ARGV: op, id, now_rfc3339, state_ttl_s, then the op's own
-- Returns {became ('' = unchanged), record_json ('' = no such call)}
local slots, count_key, queue, inflight, pace_key, started_key =
  KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local op, id, now_rfc, state_ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local record = read_record(id)
if not record then
  return {'', ''}
end
local became = ''
local ttl = nil

local function finish(status)
  record.status = status
  record.ended_at = now_rfc
  free_slot(slots, id)
  redis.call('ZREM', inflight, id)
  became = status
  ttl = state_ttl
end

if op == 'placed' then
  bind(record, slots, started_key, ARGV[5])
elseif op == 'report' then
  local status = ARGV[5]
  bind(record, slots, started_key, ARGV[6])
  if rank(status) > rank(record.status) then
    if is_final(status) then
      finish(status)
    else
      record.status = status
      became = status
      if status == 'in-progress' then
        record.answered_at = now_rfc
        redis.call('ZREM', inflight, id)
      end
    end
  end
elseif op == 'fail' then
  if not is_final(record.status) then
    record.error = cjson.decode(ARGV[5])
    finish('failed')
  end
elseif op == 'requeue' then
  if record.status == 'dialing' and type(record.call_sid) ~= 'string' then
    free_slot(slots, id)
    redis.call('ZREM', inflight, id)
    record.status = 'queued'
    record.replica = cjson.null
    record.dialed_at = cjson.null
    record.dialed_ms = cjson.null
    redis.call('LPUSH', queue, id)
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    local backoff = tonumber(ARGV[5])
    local next_at = tonumber(redis.call('GET', pace_key) or '') or 0
    if next_at < now + backoff then
      redis.call('SET', pace_key, now + backoff, 'PX', backoff + 1000)
    end
    became = 'queued'
  end
elseif op == 'cancel' then
  if record.status == 'queued' then
    redis.call('LREM', queue, 1, id)
    record.status = 'canceled'
    record.ended_at = now_rfc
    became = 'canceled'
    ttl = state_ttl
  end
end
sync_count(slots, count_key)
write_record(record, ttl)
return {became, cjson.encode(record)}

-- One outbound dial step, atomically (docs/reference.md#outbound). First every placed call whose
-- deadline passed with no word from Twilio ends failed (dial_interrupted) and frees its slot. Then,
-- if a call is queued, Redis' clock has reached the cluster-wide pace, nobody waits in the waiting
-- room and a slot is free for it (live slots < global cap less INBOUND_RESERVE, and its tenant's
-- cap), the call takes its slot (member: its outbound id, held for its ring timeout plus a
-- margin), leaves the queue, is marked dialing by this replica, and the pace moves on one interval.
-- All or nothing: the call is placed by exactly one replica, once.
-- KEYS: queue, slots, active_count, epoch, pace, inflight, wait_callers
-- ARGV: outbound_limit, interval_ms, replica, now_rfc3339, seen_epoch, holdoff_ms,
--       default_tenant_limit ('' = none), dial_margin_ms, state_ttl_s
-- Returns {code, record_json | '', wait_ms, reclaimed, epoch, data_lost, interrupted_records}
-- code: 'dial', 'idle', 'paced', 'full', 'tenant_full', 'waiting', 'recovering'.
local queue, slots, count_key, epoch_key, pace_key, inflight, wait_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local limit, interval, replica, now_rfc = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
local margin, state_ttl = tonumber(ARGV[8]), tonumber(ARGV[9])
local now = now_ms()

local interrupted = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', inflight, '-inf', now, 'LIMIT', 0, 100)) do
  redis.call('ZREM', inflight, id)
  local record = read_record(id)
  if record and not is_final(record.status) then
    record.status = 'failed'
    record.ended_at = now_rfc
    record.error = {code = cjson.null, reason = 'dial_interrupted',
      message = 'the replica placing the call stopped mid-request and Twilio reported nothing'}
    free_slot(slots, id)
    if type(record.call_sid) == 'string' then
      free_slot(slots, record.call_sid)
    end
    write_record(record, state_ttl)
    interrupted[#interrupted + 1] = cjson.encode(record)
  end
end

local opens, epoch, lost = check_epoch(epoch_key, slots, now, ARGV[5], false, tonumber(ARGV[6]), false)
local expired = reclaim(slots, now)
sync_count(slots, count_key)

local function answer(code, record, wait)
  return {code, record or '', wait or 0, expired, epoch or '', lost, interrupted}
end

local record
for _ = 1, 100 do
  local id = redis.call('LINDEX', queue, 0)
  if not id then
    return answer('idle')
  end
  record = read_record(id)
  if record and record.status == 'queued' then
    break
  end
  -- Canceled, or its record expired: not a call to place.
  redis.call('LPOP', queue)
  record = nil
end
if not record then
  return answer('idle')
end
if now < opens then
  return answer('recovering', nil, opens - now)
end
local next_at = tonumber(redis.call('GET', pace_key) or '') or 0
if now < next_at then
  return answer('paced', nil, next_at - now)
end
if redis.call('ZCOUNT', wait_key, '(' .. now, '+inf') > 0 then
  return answer('waiting')
end
local n = redis.call('ZCARD', slots)
if n >= limit then
  return answer('full')
end
local tenant = record.tenant
if type(tenant) == 'string' and tenant ~= '' then
  local cap = tenant_limit(tenant, ARGV[7])
  if cap and redis.call('ZCARD', tenant_slots_key(tenant)) >= cap then
    return answer('tenant_full')
  end
else
  tenant = nil
end

local deadline = now + tonumber(record.timeout_secs) * 1000 + margin
redis.call('ZADD', slots, deadline, record.id)
if tenant then
  tenant_slot_set(record.id, tenant, deadline)
end
sync_count(slots, count_key)
redis.call('LPOP', queue)
redis.call('SET', pace_key, now + interval, 'PX', interval + 1000)
redis.call('ZADD', inflight, deadline, record.id)
record.status = 'dialing'
record.replica = replica
record.dialed_at = now_rfc
record.dialed_ms = now
write_record(record)
return answer('dial', cjson.encode(record))

-- Shared by the outbound scripts (docs/reference.md#outbound), after the prelude. A record is the
-- JSON serde writes; cjson re-encodes it faithfully (it holds strings, integers, an object of
-- strings and nulls: no list that could come back as an object).

local RANK = {queued = 0, dialing = 1, ringing = 2, ['in-progress'] = 3}

-- Statuses only move forward; every final status ranks 4.
local function rank(status)
  return RANK[status] or 4
end

local function is_final(status)
  return rank(status) == 4
end

local function read_record(id)
  local blob = redis.call('GET', outbound_key(id))
  if not blob then
    return nil
  end
  local ok, record = pcall(cjson.decode, blob)
  if ok and type(record) == 'table' then
    return record
  end
  return nil
end

-- Writes the record back: with `ttl_s` (seconds) when given (it ended), else keeping its TTL.
local function write_record(record, ttl_s)
  if ttl_s then
    redis.call('SET', outbound_key(record.id), cjson.encode(record), 'EX', ttl_s)
  else
    redis.call('SET', outbound_key(record.id), cjson.encode(record), 'KEEPTTL')
  end
end

-- Frees the slot held under `member` (an outbound id or a call SID), with its tenant's mirror.
local function free_slot(slots, member)
  if redis.call('ZREM', slots, member) == 1 then
    tenant_slot_remove(member)
  end
end

-- Moves the slot held under the outbound id to the call SID Twilio named, keeping its deadline
-- and tenant: the voice webhook's admission then finds the call's slot held. Counts the call as
-- started (its slot became a call). A record already bound to another call SID is left alone.
local function bind(record, slots, started_key, call_sid)
  if call_sid == '' then
    return
  end
  if type(record.call_sid) ~= 'string' then
    record.call_sid = call_sid
  elseif record.call_sid ~= call_sid then
    return
  end
  local held = redis.call('ZSCORE', slots, record.id)
  if held then
    local tenant = slot_tenant(record.id)
    free_slot(slots, record.id)
    redis.call('ZADD', slots, held, call_sid)
    if tenant then
      tenant_slot_set(call_sid, tenant, held)
    end
    redis.call('INCR', started_key)
  end
end

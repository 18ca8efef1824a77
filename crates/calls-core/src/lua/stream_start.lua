-- A media stream's start in one atomic step: the call's lock, its slot and its active state. Refused
-- while another stream owns the lock (nothing changes); else admitted like admit.lua (a reservation
-- becomes the live lease; a stream without one takes a free slot if the policy allows); only then is the
-- lock taken and the state written, so a refusal leaves nothing behind.
-- KEYS: slots, active_count, stats_started, stats_rejected_max_concurrent, epoch, state, lock
-- ARGV: call_sid, limit, lease_ms, policy, recovery_holdoff_ms, seen_epoch, open_wait (0|1),
--       lock_token, lock_ttl_ms, state_ttl_s,
--       fresh_json (the state to write when none is stored, or the stored one ended or is corrupt),
--       rest_json (the same state without the carried fields),
--       tenant ('' = none), default_tenant_limit ('' = none) (a reservation keeps the tenant it took),
--       resumed (the stream's `resumed` parameter, '' if none: a continuation),
--       bound ('1' if the start carried its call's stream token, or tokens are off; else '0'),
--       then pairs of (field, default_json): fields the webhook wrote, carried from a stored state.
-- Returns {code, active, reclaimed, epoch, reregister, owner, written_json, source}: code as
-- admit_slot's, or 3 when `owner` holds the lock (or the `resumed` matches no grant), or 4 when the
-- stream took the call over with its grant, or 6 when an unbound start claims a call holding a
-- slot or a continuation; source 'stored' | 'fresh' | 'corrupt'.
local slots, count_key, state_key, lock_key = KEYS[1], KEYS[2], KEYS[6], KEYS[7]
local token = ARGV[8]
local owner = redis.call('GET', lock_key)

-- Continuation (docs/reference.md#after-stream): a stream whose `resumed` matches the grant the
-- after-stream answer recorded takes the call over: it replaces the old lock (whose socket is gone)
-- and takes the slot back even above the limit. A `resumed` that matches no grant is refused like
-- any second stream. A grant not yet taken reserves the call for its continuation: a stream without
-- it is refused too.
local resumed = ARGV[15]
local takeover = false
local stored_before = redis.call('GET', state_key)
local ok, granted = pcall(cjson.decode, stored_before or '')
-- docs/reference.md#stream-token: a start without its call's token may only be a new admission; a
-- call holding a slot (reserved, live, handed over) or a continuation is not for it, where the
-- call's TwiML carried a token (its state says so). Nothing changes.
if ARGV[16] ~= '1' and ok and type(granted) == 'table' and granted['stream_token'] == true
    and (resumed ~= '' or redis.call('ZSCORE', slots, ARGV[1])) then
  return {6, 0, {}, '', 0, 'no stream token for this call', '', ''}
end
local grant = ok and type(granted) == 'table' and type(granted['resume_grant']) == 'number'
  and tostring(granted['resume_grant']) or nil
if resumed ~= '' or grant then
  if grant == nil or grant ~= resumed then
    return {3, 0, {}, '', 0, owner or 'no matching resume grant', '', ''}
  end
  takeover = true
end

if owner and owner ~= token and not takeover then
  return {3, 0, {}, '', 0, owner, '', ''}
end

local now = now_ms()
local opens, epoch, lost = check_epoch(KEYS[5], slots, now, ARGV[6], ARGV[7] == '1',
  tonumber(ARGV[5]), false)
local expired = reclaim(slots, now)
local code, active
if takeover then
  -- A live call is never dropped by the limiter; nor is it counted as started again. Its tenant's
  -- set takes the slot back too: the tenant the call was admitted for (its slot's, else its
  -- state's), else this stream's.
  local deadline = now + tonumber(ARGV[3])
  redis.call('ZADD', slots, deadline, ARGV[1])
  local tenant = slot_tenant(ARGV[1])
  if not tenant and type(granted['tenant']) == 'string' then
    tenant = granted['tenant']
  end
  if not tenant and ARGV[13] ~= '' then
    tenant = ARGV[13]
  end
  if tenant then
    tenant_slot_set(ARGV[1], tenant, deadline)
  end
  code, active = 4, sync_count(slots, count_key)
else
  code, active = admit_slot(slots, count_key, KEYS[3], KEYS[4], ARGV[1], tonumber(ARGV[2]),
    now + tonumber(ARGV[3]), ARGV[4], now, opens, ARGV[13], ARGV[14], nil,
    admitted_before(stored_before))
end
if code ~= 1 and code ~= 2 and code ~= 4 and code ~= 5 then
  return {code, active, expired, epoch, lost, '', '', ''}
end

redis.call('SET', lock_key, token, 'PX', ARGV[9])

-- The webhook's state carries created_at, from and to (and a continued call its hand-over count); its
-- fields are spliced in as JSON text, since
-- cjson cannot re-encode a whole state faithfully (an empty list would come back as an object).
local written, source = ARGV[11], 'fresh'
local stored = redis.call('GET', state_key)
if stored then
  local ok, decoded = pcall(cjson.decode, stored)
  if not ok or type(decoded) ~= 'table' then
    source = 'corrupt'
  elseif decoded['status'] ~= 'ended' or takeover then
    -- A continued call keeps who called and when, even from the ended state of its lost stream.
    local parts = {}
    for i = 17, #ARGV - 1, 2 do
      local field, value = ARGV[i], decoded[ARGV[i]]
      if type(value) == 'string' then
        parts[#parts + 1] = cjson.encode(field) .. ':' .. cjson.encode(value)
      elseif type(value) == 'number' then
        parts[#parts + 1] = cjson.encode(field) .. ':' .. string.format('%d', value)
      elseif type(value) == 'boolean' then
        parts[#parts + 1] = cjson.encode(field) .. ':' .. tostring(value)
      else
        parts[#parts + 1] = cjson.encode(field) .. ':' .. ARGV[i + 1]
      end
    end
    local rest = ARGV[12]
    if #parts > 0 then
      written = '{' .. table.concat(parts, ',') .. ',' .. string.sub(rest, 2)
    else
      written = rest
    end
    source = 'stored'
  end
  -- docs/reference.md#resume-limit: a stream without `resumed` never resets the call's
  -- continuation count (nor its hand-overs), whatever state it finds: the budget is per call.
  if not takeover and ok and type(decoded) == 'table' and type(decoded['resumes']) == 'number'
      and decoded['resumes'] > 0 then
    written = string.gsub(written, '"resumes":%d+',
      '"resumes":' .. string.format('%d', decoded['resumes']), 1)
    if type(decoded['handovers']) == 'number' then
      written = string.gsub(written, '"handovers":%d+',
        '"handovers":' .. string.format('%d', decoded['handovers']), 1)
    end
  end
end
redis.call('SET', state_key, written, 'EX', ARGV[10])
return {code, active, expired, epoch, lost, '', written, source}

-- Shared by every script (prepended at load time). Time is Redis TIME, never a replica's clock.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Tenants (docs/reference.md#tenants). The slot of a call with a tenant is mirrored in
-- calls:tenant:{tenant}:slots (same member, same score) and named in calls:slot_tenant by every
-- step that adds, extends or removes a slot, so a tenant's count (ZCARD of its set) is exact
-- whenever the global one is. The key names come from keys.rs (lua_key_header, prepended before
-- this prelude).

-- The tenant a held slot was admitted under, or false.
local function slot_tenant(sid)
  return redis.call('HGET', SLOT_TENANT_KEY, sid)
end

-- Mirrors a slot added or extended in calls:slots (`flag`: nil or 'GT', as that ZADD had).
local function tenant_slot_set(sid, tenant, deadline, flag)
  local key = tenant_slots_key(tenant)
  if flag then
    redis.call('ZADD', key, flag, deadline, sid)
  else
    redis.call('ZADD', key, deadline, sid)
  end
  redis.call('HSET', SLOT_TENANT_KEY, sid, tenant)
end

-- Mirrors a slot removed from calls:slots; a call without a tenant, or a second removal, changes nothing.
local function tenant_slot_remove(sid)
  local tenant = slot_tenant(sid)
  if tenant then
    redis.call('ZREM', tenant_slots_key(tenant), sid)
    redis.call('HDEL', SLOT_TENANT_KEY, sid)
  end
end

-- The cap in force for `tenant`: its own in calls:tenant_limits, else `default` ('' = none).
local function tenant_limit(tenant, default)
  local own = tonumber(redis.call('HGET', TENANT_LIMITS_KEY, tenant) or '')
  if own then
    return own
  end
  return tonumber(default)
end

-- Removes every slot whose lease deadline has passed (and its tenant's mirror); returns their call SIDs.
local function reclaim(slots, now)
  local expired = redis.call('ZRANGEBYSCORE', slots, '-inf', now)
  if #expired > 0 then
    redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
    for _, sid in ipairs(expired) do
      tenant_slot_remove(sid)
    end
  end
  return expired
end

-- calls:active_count mirrors ZCARD calls:slots after every script, so it can never drift or go negative.
local function sync_count(slots, count_key)
  local n = redis.call('ZCARD', slots)
  redis.call('SET', count_key, n)
  return n
end

-- Whether no replica could renew for longer than a lease: the deadline the last renewal of any
-- replica set (calls:renewed_until) has passed and a slot lapsed meanwhile. Then every lease may
-- have lapsed under live calls (Redis was out of reach of every replica, or stopped), and the wait
-- opens, whoever's script finds it. One replica cut off or paused while others renew leaves the
-- deadline ahead: its calls come back when it does, and no one's admissions wait
-- (docs/reference.md#admission). No renewal recorded yet (a brand-new Redis, or one that lost its
-- data): the epoch decides.
local function cluster_lapsed(slots, now)
  local renewed = tonumber(redis.call('GET', RENEWED_UNTIL_KEY) or '')
  return renewed ~= nil and renewed < now
    and #redis.call('ZRANGEBYSCORE', slots, '-inf', now, 'LIMIT', 0, 1) > 0
end

-- calls:epoch holds the Redis-time ms at which admissions open; the replica remembers the value it saw
-- last (`seen`, '' if none). Missing under a replica that has seen one, or changed while no wait is
-- open, means Redis lost its data: the wait opens (`holdoff` ms) and the replica must re-register its
-- live calls at once. Missing where this replica has seen none and no slot exists is a brand-new Redis:
-- admissions open now. `open_wait` (the replica found Redis restarted or failed over) opens the wait
-- too, and so does a cluster that could not renew for longer than a lease (cluster_lapsed). Returns
-- the ms at which admissions open, the epoch as it now reads, and 1 if the replica must re-register
-- now.
local function check_epoch(epoch_key, slots, now, seen, open_wait, holdoff, serving)
  local value = redis.call('GET', epoch_key)
  local lost = 0
  if not value then
    if seen == '' and not serving and redis.call('EXISTS', slots) == 0 then
      value = tostring(now)
      redis.call('SET', epoch_key, value)
    else
      lost = 1
      open_wait = true
    end
  elseif seen ~= '' and value ~= seen then
    lost = 1
    if (tonumber(value) or 0) <= now then
      open_wait = true
    end
  end
  local opens = tonumber(value or '') or 0
  if not open_wait and cluster_lapsed(slots, now) then
    open_wait = true
  end
  if open_wait and opens < now + holdoff then
    opens = now + holdoff
    value = tostring(opens)
    redis.call('SET', epoch_key, value)
  end
  return opens, value, lost
end

-- Whether a stored state says its call ended for good: ended for any reason but a lapsed lease (a
-- reservation whose stream never came may be retried; a finished call may not take a slot again).
-- Every state is written compact (serde_json by the replicas, cjson here), so one without the text
-- `"status":"ended"` cannot have ended: the renewal asks this of every live call on every tick, and
-- the plain search spares it a JSON decode per call. A match (even inside a custom parameter) is
-- decoded to be sure.
local function ended_for_good(blob)
  if not blob or not string.find(blob, '"status":"ended"', 1, true) then
    return false
  end
  local ok, state = pcall(cjson.decode, blob)
  return ok and type(state) == 'table' and state.status == 'ended'
    and state.end_reason ~= 'lease_expired'
end

-- Whether a stored state says its call was admitted before (reserved, active, or ended after
-- either): a slot it takes again (its reservation lapsed, or its slot was reclaimed) is no new
-- call, and `started` counts calls. A state written before any admission (a caller waiting in
-- line, status `waiting`) is not one.
local function admitted_before(blob)
  return blob ~= nil and blob ~= false and not string.find(blob, '"status":"waiting"', 1, true)
end

-- The live count inside admit_slot: the batch's, or read (and mirrored) from the slots.
local function batch_count(batch, slots, count_key)
  if batch then
    return batch.n
  end
  return sync_count(slots, count_key)
end

-- Takes a slot for `sid` with the given lease deadline, or refreshes the one it holds. Returns a code
-- (1 new slot, 2 already held, 0 at limit, -1 recovering, -2 no slot held with policy 'existing',
-- 4 under the global cap but at its tenant's, 5 a new slot for a call `counted` before: not
-- counted as started again) and the live count. `tenant` ('' = none) and
-- `tenant_default` ('' = none) are checked in this same step: the global cap first, then the tenant's.
-- `held` is the slot's ZSCORE when the caller already read it in this script (false: none), nil
-- otherwise: each command a script runs costs Redis, and the webhook's admission is the hot path.
-- `batch` (admit.lua's many admissions; nil elsewhere) is {n = the live count, started = 0,
-- rejected = 0}: the count is kept there instead of read with ZCARD, and the count key and the two
-- counters are left for the batch to write once at its end (finish_batch), not per admission.
local function admit_slot(slots, count_key, started_key, rejected_key, sid, limit, deadline, policy,
                          now, opens, tenant, tenant_default, held, counted, batch)
  if held == nil then
    held = redis.call('ZSCORE', slots, sid)
  end
  if held then
    -- The new lease replaces the old one: a stream activating its reservation swaps the long wait
    -- for its stream for the short live-call lease its replica renews.
    redis.call('ZADD', slots, 'XX', deadline, sid)
    -- The slot keeps the tenant it was admitted under.
    local held_by = slot_tenant(sid)
    if held_by then
      tenant_slot_set(sid, held_by, deadline)
    end
    return 2, batch_count(batch, slots, count_key)
  end
  if policy == 'existing' then
    return -2, batch_count(batch, slots, count_key)
  end
  if now < opens then
    return -1, batch_count(batch, slots, count_key)
  end
  local n = batch and batch.n or redis.call('ZCARD', slots)
  if n >= limit then
    if batch then
      batch.rejected = batch.rejected + 1
    else
      redis.call('INCR', rejected_key)
      redis.call('SET', count_key, n)
    end
    return 0, n
  end
  if tenant ~= '' then
    local cap = tenant_limit(tenant, tenant_default)
    if cap and redis.call('ZCARD', tenant_slots_key(tenant)) >= cap then
      redis.call('INCR', REJECTED_TENANT_LIMIT_KEY)
      if not batch then
        redis.call('SET', count_key, n)
      end
      return 4, n
    end
  end
  redis.call('ZADD', slots, deadline, sid)
  if tenant ~= '' then
    tenant_slot_set(sid, tenant, deadline)
  end
  if batch then
    batch.n = n + 1
  else
    redis.call('SET', count_key, n + 1)
  end
  if counted then
    return 5, n + 1
  end
  if batch then
    batch.started = batch.started + 1
  else
    redis.call('INCR', started_key)
  end
  return 1, n + 1
end

-- Writes what a batch of admit_slot calls kept: the counters once each, and the count key, which
-- then mirrors ZCARD as after every other script.
local function finish_batch(batch, count_key, started_key, rejected_key)
  if batch.started > 0 then
    redis.call('INCRBY', started_key, batch.started)
  end
  if batch.rejected > 0 then
    redis.call('INCRBY', rejected_key, batch.rejected)
  end
  redis.call('SET', count_key, batch.n)
end

-- docs/reference.md#after-stream: a continuation granted by the after-stream answer must survive
-- the old stream's last writes (its end, or a tick of a replica that has not yet noticed its socket
-- is gone), or the new stream would find no grant. Returns `json` (a state as a replica wrote it,
-- which never carries a grant) with the pending grant and count of `stored` (the state as Redis
-- holds it) spliced in; unchanged when none is pending. The replica's JSON has exactly one
-- top-level `"resumes":N` (strings escape their quotes), so the splice is a text edit: cjson cannot
-- re-encode a whole state faithfully.
local function keep_grant(stored, json)
  -- As in ended_for_good: no `"resume_grant":` in the text, no grant, and no decode.
  if not stored or not string.find(stored, '"resume_grant":', 1, true) then
    return json
  end
  local ok, decoded = pcall(cjson.decode, stored)
  if not (ok and type(decoded) == 'table' and type(decoded['resume_grant']) == 'number') then
    return json
  end
  local grant = string.format('%d', decoded['resume_grant'])
  local kept = string.gsub(json, '"resumes":%d+', '"resumes":' .. grant .. ',"resume_grant":' .. grant, 1)
  -- The grant may have counted a planned hand-over (a drain): that count goes with it.
  if type(decoded['handovers']) == 'number' then
    kept = string.gsub(kept, '"handovers":%d+', '"handovers":' .. string.format('%d', decoded['handovers']), 1)
  end
  return kept
end

-- One replica's renewal tick in one round trip: reclaim lapsed slots, re-add and extend each of its live
-- calls whatever the count (the limiter never drops a live call), renew or re-take their locks, flush
-- their states, write the replica heartbeat and how long the cluster has renewed (calls:renewed_until).
-- KEYS: slots, active_count, epoch, heartbeat, then for each call: lock, state
-- ARGV: lease_ms, lock_ttl_ms, state_ttl_s, recovery_holdoff_ms, heartbeat_json, heartbeat_ttl_ms,
--       seen_epoch, open_wait (0|1), heal (0|1: heal the tenants' sets, once per tick),
--       then for each call: call_sid, lock_token, state_json ('' keeps the stored state, refreshing its TTL),
--       tenant ('' = none; re-registers the call in its tenant's set too)
-- A call whose stored state has ended is skipped: it is over, and renewing it would resurrect its slot.
-- Returns {active, readded, lock_lost, reclaimed, epoch, ended, data_lost (1|0), tenant_limits (HGETALL),
-- healed (entries of tenants' sets corrected)}. Data loss found here needs no second
-- pass: this very script re-adds the batch.
local slots = KEYS[1]
local now = now_ms()
local header = 9
local stride = 4
local calls = (#ARGV - header) / stride
local _, epoch, data_lost = check_epoch(KEYS[3], slots, now, ARGV[7], ARGV[8] == '1', tonumber(ARGV[4]),
  calls > 0)
local expired = reclaim(slots, now)
local deadline = now + tonumber(ARGV[1])
local lock_ttl = tonumber(ARGV[2])
local state_ttl = tonumber(ARGV[3])

local readded, lost, ended = {}, {}, {}

-- The lock is renewed if this stream owns it, re-taken if it vanished (Redis lost its data); the
-- state is written only by the lock's owner.
local function renew_lock_and_state(sid, token, state, lock_key, state_key, stored)
  local owner = redis.call('GET', lock_key)
  if owner == token then
    redis.call('PEXPIRE', lock_key, lock_ttl)
  elseif not owner then
    redis.call('SET', lock_key, token, 'PX', lock_ttl)
  else
    lost[#lost + 1] = sid
    return
  end
  if state ~= '' then
    -- A continuation granted meanwhile (docs/reference.md#after-stream) stays until its stream
    -- takes the call.
    redis.call('SET', state_key, keep_grant(stored, state), 'EX', state_ttl)
  else
    redis.call('EXPIRE', state_key, state_ttl)
  end
end

for i = 0, calls - 1 do
  local base = header + 1 + stride * i
  local sid, token, state, tenant = ARGV[base], ARGV[base + 1], ARGV[base + 2], ARGV[base + 3]
  local lock_key, state_key = KEYS[5 + 2 * i], KEYS[6 + 2 * i]
  -- Read once: whether the call ended, and the grant to keep, both come from it.
  local stored = redis.call('GET', state_key)
  if ended_for_good(stored) then
    -- The call ended (its stream finished after this batch was built, or a final status
    -- callback came): renewing it would resurrect a released slot.
    ended[#ended + 1] = sid
  else
    if redis.call('ZADD', slots, 'GT', deadline, sid) == 1 then
      readded[#readded + 1] = sid
    end
    -- Its tenant's set follows, whatever that tenant's count: the tenant the slot was admitted
    -- under, else (re-registering after a reclaim or a data loss) the call's own.
    local held_by = slot_tenant(sid) or (tenant ~= '' and tenant)
    if held_by then
      tenant_slot_set(sid, held_by, deadline, 'GT')
    end
    renew_lock_and_state(sid, token, state, lock_key, state_key, stored)
  end
end

-- docs/reference.md#tenants: every tenant's set holds exactly the live slots calls:slot_tenant
-- names for it, with their deadlines, so its count is exact whatever made it drift (a key lost
-- or edited, a script of an older version). Checked for every tenant with a live slot or a cap.
local function heal_tenant_sets()
  local named = redis.call('HGETALL', SLOT_TENANT_KEY)
  local want = {}
  for i = 1, #named, 2 do
    local sid, tenant = named[i], named[i + 1]
    local score = redis.call('ZSCORE', slots, sid)
    if score then
      want[tenant] = want[tenant] or {}
      want[tenant][sid] = score
    else
      redis.call('HDEL', SLOT_TENANT_KEY, sid)
    end
  end
  for _, tenant in ipairs(redis.call('HKEYS', TENANT_LIMITS_KEY)) do
    want[tenant] = want[tenant] or {}
  end
  local healed = 0
  for tenant, members in pairs(want) do
    local key = tenant_slots_key(tenant)
    local held = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
    local found = {}
    for i = 1, #held, 2 do
      local sid = held[i]
      if members[sid] then
        found[sid] = true
        if tonumber(held[i + 1]) ~= tonumber(members[sid]) then
          redis.call('ZADD', key, members[sid], sid)
          healed = healed + 1
        end
      else
        redis.call('ZREM', key, sid)
        healed = healed + 1
      end
    end
    for sid, score in pairs(members) do
      if not found[sid] then
        redis.call('ZADD', key, score, sid)
        healed = healed + 1
      end
    end
  end
  return healed
end

local healed = 0
if ARGV[9] == '1' then
  healed = heal_tenant_sets()
end

redis.call('SET', KEYS[4], ARGV[5], 'PX', ARGV[6])
-- The cluster renewed until `deadline` at least (a replica with a longer lease may have set more).
if (tonumber(redis.call('GET', RENEWED_UNTIL_KEY) or '') or 0) < deadline then
  redis.call('SET', RENEWED_UNTIL_KEY, deadline)
end
return {sync_count(slots, KEYS[2]), readded, lost, expired, epoch, ended, data_lost,
  redis.call('HGETALL', TENANT_LIMITS_KEY), healed}

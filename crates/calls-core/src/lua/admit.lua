-- The voice webhooks' admissions, atomically, for one or more calls a replica received at the same
-- time (one script per batch: the per-script cost is paid once). Reclaim lapsed slots once, then for
-- each admission in order: refresh the call's slot if it holds one, else take a free one (counting
-- started, writing the reserved state) or refuse (counting rejected_max_concurrent). Redis runs the
-- script alone, so each admission sees every earlier one and the caps stay exact.
-- KEYS: slots, active_count, stats_started, stats_rejected_max_concurrent, epoch,
--       then one per admission: state
-- ARGV: limit, recovery_holdoff_ms, state_ttl_s, seen_epoch, open_wait (0|1),
--       default_tenant_limit ('' = none),
--       then six per admission: call_sid, lease_ms, policy ('take' | 'existing'),
--       state_json ('' = none; written only with a new slot), tenant ('' = none),
--       deadline_ms (Redis TIME ms; '' = none)
-- Returns {reclaimed, epoch, reregister, results, now}: results holds {code, active} per admission,
-- in order, flat; code as admit_slot's (5: a slot taken again, not counted), or -3: the call already ended for good (a webhook retried
-- after its call finished takes no slot and keeps the final state), or -4: the admission's deadline
-- passed before Redis ran it (its webhook was answered with the reject mode: it takes nothing and
-- counts nothing; docs/reference.md#admission-deadline). `now` lets the replica map its clock
-- onto Redis'.
local HEADER, PER = 6, 6
local slots, count_key = KEYS[1], KEYS[2]
local limit, ttl, default_limit = tonumber(ARGV[1]), ARGV[3], ARGV[6]
local now = now_ms()
local opens, epoch, lost = check_epoch(KEYS[5], slots, now, ARGV[4], ARGV[5] == '1',
  tonumber(ARGV[2]), false)
local expired = reclaim(slots, now)
-- Nothing but this loop's admissions changes the slots from here: the count is read once.
local batch = {n = redis.call('ZCARD', slots), started = 0, rejected = 0}
local results = {}
for i = 0, (#ARGV - HEADER) / PER - 1 do
  local a = HEADER + i * PER
  local sid, state_key, state_json = ARGV[a + 1], KEYS[6 + i], ARGV[a + 4]
  local deadline = tonumber(ARGV[a + 6])
  local code, active, held
  if not (deadline and now > deadline) then
    -- Read once: the ended check and the admission both ask whether the call holds a slot.
    held = redis.call('ZSCORE', slots, sid)
  end
  -- A call without a slot: what its stored state says (ended for good; admitted before).
  local stored = false
  if held == false then
    stored = redis.call('GET', state_key)
  end
  if held == nil then
    code, active = -4, batch.n
  elseif state_json ~= '' and held == false and ended_for_good(stored) then
    code, active = -3, batch.n
  else
    code, active = admit_slot(slots, count_key, KEYS[3], KEYS[4], sid, limit,
      now + tonumber(ARGV[a + 2]), ARGV[a + 3], now, opens, ARGV[a + 5], default_limit, held,
      admitted_before(stored), batch)
    if (code == 1 or code == 5) and state_json ~= '' then
      redis.call('SET', state_key, state_json, 'EX', ttl)
    end
  end
  results[#results + 1] = code
  results[#results + 1] = active
end
-- A batch that fails halfway (a write refused: Redis out of memory) never gets here: its webhooks
-- get the reject mode (a store error), none is counted as started, the slots it took lapse with
-- their reservation, and the next script rewrites the count key from ZCARD.
finish_batch(batch, count_key, KEYS[3], KEYS[4])
return {expired, epoch, lost, results, now}

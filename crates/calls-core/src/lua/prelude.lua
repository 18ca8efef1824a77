-- Shared by every script (prepended at load time). Time is Redis TIME, never a replica's clock.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Removes every slot whose lease deadline has passed; returns their call SIDs.
local function reclaim(slots, now)
  local expired = redis.call('ZRANGEBYSCORE', slots, '-inf', now)
  if #expired > 0 then
    redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
  end
  return expired
end

-- calls:active_count mirrors ZCARD calls:slots after every script, so it can never drift or go negative.
local function sync_count(slots, count_key)
  local n = redis.call('ZCARD', slots)
  redis.call('SET', count_key, n)
  return n
end

-- calls:epoch holds the Redis-time ms at which admissions open; the replica remembers the value it saw
-- last (`seen`, '' if none). Missing under a replica that has seen one, or changed while no wait is
-- open, means Redis lost its data: the wait opens (`holdoff` ms) and the replica must re-register its
-- live calls at once. Missing where this replica has seen none and no slot exists is a brand-new Redis:
-- admissions open now. `open_wait` (the replica found Redis restarted, or was cut off from it longer
-- than a lease) opens the wait too. Returns the ms at which admissions open, the epoch as it now
-- reads, and 1 if the replica must re-register now.
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
  if open_wait and opens < now + holdoff then
    opens = now + holdoff
    value = tostring(opens)
    redis.call('SET', epoch_key, value)
  end
  return opens, value, lost
end

-- Whether a stored state says its call ended for good: ended for any reason but a lapsed lease (a
-- reservation whose stream never came may be retried; a finished call may not take a slot again).
local function ended_for_good(blob)
  if not blob then
    return false
  end
  local ok, state = pcall(cjson.decode, blob)
  return ok and type(state) == 'table' and state.status == 'ended'
    and state.end_reason ~= 'lease_expired'
end

-- Takes a slot for `sid` with the given lease deadline, or refreshes the one it holds. Returns a code
-- (1 new slot, 2 already held, 0 at limit, -1 recovering, -2 no slot held with policy 'existing') and
-- the live count.
local function admit_slot(slots, count_key, started_key, rejected_key, sid, limit, deadline, policy,
                          now, opens)
  if redis.call('ZSCORE', slots, sid) then
    -- The new lease replaces the old one: a stream activating its reservation swaps the long wait
    -- for its stream for the short live-call lease its replica renews.
    redis.call('ZADD', slots, 'XX', deadline, sid)
    return 2, sync_count(slots, count_key)
  end
  if policy == 'existing' then
    return -2, sync_count(slots, count_key)
  end
  if now < opens then
    return -1, sync_count(slots, count_key)
  end
  local n = redis.call('ZCARD', slots)
  if n < limit then
    redis.call('ZADD', slots, deadline, sid)
    redis.call('INCR', started_key)
    redis.call('SET', count_key, n + 1)
    return 1, n + 1
  end
  redis.call('INCR', rejected_key)
  redis.call('SET', count_key, n)
  return 0, n
end

-- SPEC §9: a continuation granted by the after-stream answer must survive the old stream's last writes
-- (its end, or a tick of a replica that has not yet noticed its socket is gone), or the new stream
-- would find no grant. Returns `json` (a state as a replica wrote it, which never carries a grant)
-- with the stored state's pending grant and count spliced in; unchanged when none is pending. The
-- replica's JSON has exactly one top-level `"resumes":N` (strings escape their quotes), so the
-- splice is a text edit: cjson cannot re-encode a whole state faithfully.
local function keep_grant(state_key, json)
  local stored = redis.call('GET', state_key)
  if not stored then
    return json
  end
  local ok, decoded = pcall(cjson.decode, stored)
  if not (ok and type(decoded) == 'table' and type(decoded['resume_grant']) == 'number') then
    return json
  end
  local grant = string.format('%d', decoded['resume_grant'])
  local kept = string.gsub(json, '"resumes":%d+', '"resumes":' .. grant .. ',"resume_grant":' .. grant, 1)
  return kept
end

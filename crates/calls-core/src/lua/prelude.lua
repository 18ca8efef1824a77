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

-- A missing epoch means Redis lost its data: admissions reopen only after `holdoff` ms, once live calls
-- have had a renewal tick to re-register. Returns the ms at which admissions open, and whether the
-- epoch was just created.
local function open_epoch(epoch_key, now, holdoff)
  local opens = redis.call('GET', epoch_key)
  if opens then
    return tonumber(opens) or 0, 0
  end
  opens = now + holdoff
  redis.call('SET', epoch_key, opens)
  return opens, 1
end

-- The waiting room (docs/reference.md#waiting-room): one step of the line in one atomic script, so
-- any replica answers any visit and two visits never both take the last slot. Callers silent for
-- two polls leave first (counted as refused for the reason that sent them to the line), then:
--   visit: a call holding a slot keeps it (no second one); a caller in line is admitted if their
--          turn has come (the fair order below, over the callers present, with the free slots),
--          else overflows on the digit or after max_wait, else stays (their position); a call
--          not in line takes a slot only if one is left after every turn (nobody jumps the
--          line), else joins it (or overflows as `full`).
--   leave: a final status callback takes a waiting call out of the line.
--   sweep: a renewal tick; reports how many wait and the longest wait.
-- The fair order: tenant by tenant, the tenant served from the line least recently first, ties to
-- the earliest waiter; first come, first served within a tenant; a tenant at its cap is passed
-- over. `wait.rs` (turns, position) is the same order for the in-process store.
-- KEYS: slots, active_count, stats_started, stats_rejected_max_concurrent, epoch, state,
--       wait_callers, wait_order, wait_info, wait_served, wait_seq
-- ARGV: op, call_sid, digit (0|1), limit, reservation_ms, recovery_holdoff_ms, seen_epoch,
--       open_wait (0|1), state_ttl_s, tenant ('' = none), default_tenant_limit ('' = none),
--       reserved_json, waiting_json, max_wait_ms, max_callers, turn_kept_ms, gone_after_ms,
--       key_ttl_ms
-- Returns {code, a, b, c, abandoned, reclaimed, epoch, lost} (abandoned: the reason each waited
-- for, 'm' or 't', then its call SID):
--   1 admitted with a new slot (a active, b waited ms or -1 if it never waited)
--   2 admitted, slot already held (a active)
--   3 waiting (a position, b announce 0|1, c joined 0|1)
--   5 overflow (a 1 timeout | 2 digit | 3 full, b waited ms or -1, c 'm'|'t' the reason it waited for)
--   6 left (a 1 if it was in line, c the reason it waited for)
--   7 swept (a callers in line, b longest wait ms)
--   -3 the call already ended for good
local slots, count_key, started_key, rejected_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local state_key, callers_key, order_key, info_key, served_key, seq_key =
  KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11]
local op, sid, digit = ARGV[1], ARGV[2], ARGV[3] == '1'
local limit, reservation = tonumber(ARGV[4]), tonumber(ARGV[5])
local state_ttl, tenant, default_limit = ARGV[9], ARGV[10], ARGV[11]
local max_wait, max_callers = tonumber(ARGV[14]), tonumber(ARGV[15])
local turn_kept, gone_after, key_ttl = tonumber(ARGV[16]), tonumber(ARGV[17]), tonumber(ARGV[18])

local now = now_ms()
local opens, epoch, lost = check_epoch(KEYS[5], slots, now, ARGV[7], ARGV[8] == '1',
  tonumber(ARGV[6]), false)
local expired = reclaim(slots, now)

-- seq|joined_ms|last_visit_ms|reason|position|tenant (tenant last: it may hold '|').
local function parse(value)
  local seq, joined, last, reason, position, who =
    string.match(value, '^(%d+)|(%d+)|(%d+)|(%a)|(%d+)|(.*)$')
  if not seq then
    return nil
  end
  return {seq = tonumber(seq), joined = tonumber(joined), last = tonumber(last), reason = reason,
    position = tonumber(position), tenant = who}
end

local function store_info(caller)
  redis.call('HSET', info_key, caller.sid, string.format('%d|%d|%d|%s|%d|%s', caller.seq,
    caller.joined, caller.last, caller.reason, caller.position, caller.tenant))
end

local function remove(who)
  redis.call('ZREM', callers_key, who)
  redis.call('ZREM', order_key, who)
  redis.call('HDEL', info_key, who)
end

-- Counted once, as refused for the reason that sent the caller to the line.
local function count_refused(reason)
  if reason == 't' then
    redis.call('INCR', REJECTED_TENANT_LIMIT_KEY)
  else
    redis.call('INCR', rejected_key)
  end
end

-- Callers silent for two polls leave the line.
local abandoned = {}
for _, who in ipairs(redis.call('ZRANGEBYSCORE', callers_key, '-inf', now)) do
  local caller = parse(redis.call('HGET', info_key, who) or '')
  remove(who)
  local reason = caller and caller.reason or 'm'
  if caller then
    count_refused(reason)
  end
  abandoned[#abandoned + 1] = reason .. who
end

local function finish(reply)
  for _, key in ipairs({callers_key, order_key, info_key, served_key, seq_key}) do
    redis.call('PEXPIRE', key, key_ttl)
  end
  reply[4] = tostring(reply[4])
  reply[5], reply[6], reply[7], reply[8] = abandoned, expired, epoch, lost
  return reply
end

-- Everyone in line, in joining order.
local function load_line()
  local sids = redis.call('ZRANGE', order_key, 0, -1)
  local line = {}
  for first = 1, #sids, 500 do
    local chunk = {}
    for i = first, math.min(first + 499, #sids) do
      chunk[#chunk + 1] = sids[i]
    end
    local infos = redis.call('HMGET', info_key, unpack(chunk))
    for i, who in ipairs(chunk) do
      local caller = infos[i] and parse(infos[i])
      if caller then
        caller.sid = who
        line[#line + 1] = caller
      end
    end
  end
  return line
end

local served, max_served = {}, 0
do
  local flat = redis.call('HGETALL', served_key)
  for i = 1, #flat, 2 do
    local at = tonumber(flat[i + 1]) or 0
    served[flat[i]] = at
    if at > max_served then
      max_served = at
    end
  end
end

-- Free slots under a tenant's own cap ('' = no tenant: none).
local function room(who)
  if who == '' then
    return math.huge
  end
  local cap = tenant_limit(who, default_limit)
  if not cap then
    return math.huge
  end
  return math.max(0, cap - redis.call('ZCARD', tenant_slots_key(who)))
end

-- The first `count` callers of `line` in the fair order; `with_room`: tenants' caps apply;
-- `present_only`: callers who have not visited within turn_kept are passed over.
local function order(line, count, with_room, present_only)
  local queues, tenants = {}, {}
  for i, caller in ipairs(line) do
    if not present_only or caller.last + turn_kept > now then
      local queue = queues[caller.tenant]
      if not queue then
        local at = served[caller.tenant]
        queue = {head = 1, items = {}, left = with_room and room(caller.tenant) or math.huge,
          recency = at and at + 1 or 0}
        queues[caller.tenant] = queue
        tenants[#tenants + 1] = caller.tenant
      end
      queue.items[#queue.items + 1] = i
    end
  end
  local next_served = max_served + 2
  local picked = {}
  while #picked < count do
    local best, best_recency, best_at
    for _, who in ipairs(tenants) do
      local queue = queues[who]
      if queue.head <= #queue.items and queue.left > 0 then
        local recency, at = queue.recency, queue.items[queue.head]
        if not best or recency < best_recency or (recency == best_recency and at < best_at) then
          best, best_recency, best_at = who, recency, at
        end
      end
    end
    if not best then
      break
    end
    local queue = queues[best]
    picked[#picked + 1] = line[queue.items[queue.head]]
    queue.head = queue.head + 1
    queue.left = queue.left - 1
    queue.recency = next_served
    next_served = next_served + 1
  end
  return picked
end

local function position(line, who)
  local all = order(line, #line, false, false)
  for i, caller in ipairs(all) do
    if caller.sid == who then
      return i
    end
  end
  return #all + 1
end

-- The reserved state (`json`, as a replica wrote it: no `waiting_since`) with the stored waiting
-- state's `waiting_since` spliced in, so the admitted call's state says how long it waited. A text
-- edit, as keep_grant's: cjson cannot re-encode a whole state faithfully.
local function with_waiting_since(json)
  local stored = redis.call('GET', state_key)
  local since = stored and string.match(stored, '"waiting_since":"([^"]*)"')
  if not since or string.sub(json, -1) ~= '}' then
    return json
  end
  return string.sub(json, 1, -2) .. ',"waiting_since":"' .. since .. '"}'
end

local function free_slots()
  return math.max(0, limit - redis.call('ZCARD', slots))
end

local function overflow(caller, why)
  remove(caller.sid)
  count_refused(caller.reason)
  return finish({5, why, now - caller.joined, caller.reason})
end

if op == 'sweep' then
  local oldest = now
  for _, value in ipairs(redis.call('HVALS', info_key)) do
    local caller = parse(value)
    if caller and caller.joined < oldest then
      oldest = caller.joined
    end
  end
  return finish({7, redis.call('ZCARD', callers_key), now - oldest, 0})
end

if op == 'leave' then
  local caller = parse(redis.call('HGET', info_key, sid) or '')
  if not caller then
    return finish({6, 0, 0, 0})
  end
  remove(sid)
  count_refused(caller.reason)
  return finish({6, 1, 0, caller.reason})
end

local held = redis.call('ZSCORE', slots, sid)
if held then
  -- A retried webhook, or a visit after the admission: the slot it holds, never a second one.
  remove(sid)
  local _, active = admit_slot(slots, count_key, started_key, rejected_key, sid, limit,
    now + reservation, 'take', now, opens, tenant, default_limit, held)
  return finish({2, active, 0, 0})
end

local mine = parse(redis.call('HGET', info_key, sid) or '')
if mine then
  mine.sid = sid
  mine.last = now
  if digit then
    return overflow(mine, 2)
  end
  local line = load_line()
  for _, caller in ipairs(line) do
    if caller.sid == sid then
      caller.last = now
    end
  end
  if now >= opens then
    for _, caller in ipairs(order(line, free_slots(), true, true)) do
      if caller.sid == sid then
        local code, active = admit_slot(slots, count_key, started_key, rejected_key, sid, limit,
          now + reservation, 'take', now, opens, mine.tenant, default_limit, false)
        if code == 1 then
          remove(sid)
          redis.call('HSET', served_key, mine.tenant, now)
          redis.call('SET', state_key, with_waiting_since(ARGV[12]), 'EX', state_ttl)
          return finish({1, active, now - mine.joined, 0})
        end
      end
    end
  end
  if now - mine.joined >= max_wait then
    return overflow(mine, 1)
  end
  local place = position(line, sid)
  local announce = place ~= mine.position and 1 or 0
  mine.position = place
  store_info(mine)
  redis.call('ZADD', callers_key, now + gone_after, sid)
  return finish({3, place, announce, 0})
end

if ended_for_good(redis.call('GET', state_key)) then
  return finish({-3, 0, 0, 0})
end
-- Nobody jumps the line: a slot left after every turn of the callers present, under this call's
-- tenant's cap too, or the line. While admissions wait after Redis lost its data (live calls
-- re-registering), no slot is free for anyone: the call waits in line rather than being refused.
local line = load_line()
local left, own = 0, 0
if now >= opens then
  local turns = order(line, free_slots(), true, true)
  left = free_slots() - #turns
  for _, caller in ipairs(turns) do
    if caller.tenant == tenant then
      own = own + 1
    end
  end
end
if left > 0 and room(tenant) - own > 0 then
  local code, active = admit_slot(slots, count_key, started_key, rejected_key, sid, limit,
    now + reservation, 'take', now, opens, tenant, default_limit, false)
  if code == 1 then
    redis.call('SET', state_key, ARGV[12], 'EX', state_ttl)
  end
  return finish({code, active, -1, 0})
end
local reason = left > 0 and 't' or 'm'
if redis.call('ZCARD', callers_key) >= max_callers then
  count_refused(reason)
  return finish({5, 3, -1, reason})
end
local seq = redis.call('INCR', seq_key)
mine = {sid = sid, seq = seq, joined = now, last = now, reason = reason, position = 0,
  tenant = tenant}
redis.call('ZADD', order_key, seq, sid)
redis.call('ZADD', callers_key, now + gone_after, sid)
redis.call('SET', state_key, ARGV[13], 'EX', state_ttl)
line[#line + 1] = mine
mine.position = position(line, sid)
store_info(mine)
return finish({3, mine.position, 1, 1})

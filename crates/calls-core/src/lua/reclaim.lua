-- Reclaim every lapsed slot (a crashed replica's calls, reservations whose stream never came).
-- KEYS: slots, active_count
-- Returns {active, reclaimed}.
local expired = reclaim(KEYS[1], now_ms())
return {sync_count(KEYS[1], KEYS[2]), expired}

"""Redis' own time per admission in admit.lua, without the server: loads header + prelude + admit
(from files, so a variant of the Lua is measured without a build), then runs REPS batches of N new
admissions (a state JSON as the server writes one) on a fresh redis-server, and prints EVALSHA's
usec per admission from INFO commandstats. LIMIT=N sets MAX_CONCURRENT_CALLS (default 100000), to
check the refusal path's counters; SHOW=1 prints the first reply.
Usage: python3 admit_lua.py PRELUDE ADMIT [N] [REPS]  (redis-server on PATH; Linux)"""
import os, sys, time

from luabench import Redis, lua_source

n = int(sys.argv[3]) if len(sys.argv) > 3 else 55
reps = int(sys.argv[4]) if len(sys.argv) > 4 else 200
STATE = ('{"call_sid":"%s","stream_sid":null,"account_sid":"AC46678e78e34a65ca41777ea73a976619",'
         '"from":"+15005550006","to":"+15005550001","status":"reserved","replica":"vm-22200",'
         '"stream_url":"ws://127.0.0.1:32529/twilio/stream","created_at":"2026-12-06T20:37:40.473636384Z",'
         '"started_at":null,"ended_at":null,"end_reason":null,"media_format":null,"custom_parameters":{},'
         '"frames_in":0,"frames_out":0,"bytes_in":0,"dtmf":"","marks":[],"tenant":null,"resumes":0,'
         '"handovers":0,"stream_token":false,"direction":"inbound"}')

redis = Redis()
try:
    sha = redis.cmd("SCRIPT", "LOAD", lua_source(sys.argv[1], sys.argv[2])).decode()
    redis.cmd("CONFIG", "RESETSTAT")
    for rep in range(reps):
        keys = ["calls:slots", "calls:active_count", "calls:stats:started",
                "calls:stats:rejected_max_concurrent", "calls:epoch"]
        argv = [int(os.environ.get("LIMIT", 100000)), 15000, 3600, "", 0, ""]
        now = int(time.time() * 1000)
        for i in range(n):
            sid = "CA%032x" % (rep * 1000 + i)
            keys.append("calls:state:" + sid)
            argv += [sid, 30000, "take", STATE % sid, "", now + 60000]
        reply = redis.cmd("EVALSHA", sha, len(keys), *keys, *argv)
        if rep == 0 and os.environ.get("SHOW"):
            print(reply[:3], reply[3][:6])
        if rep % 20 == 19:
            redis.cmd("DEL", "calls:slots")  # keep the ZSET at a burst's size
    usec = redis.evalsha_usec()
    started = int(redis.cmd("GET", "calls:stats:started"))
    active = redis.cmd("GET", "calls:active_count").decode()
    zcard = int(redis.cmd("ZCARD", "calls:slots"))
    rejected = redis.cmd("GET", "calls:stats:rejected_max_concurrent")
    print(f"rejected {rejected}; {n} admissions per batch, {reps} batches: {usec / (n * reps):.2f} µs per "
          f"admission (started {started}, active_count {active}, ZCARD {zcard})")
finally:
    redis.close()

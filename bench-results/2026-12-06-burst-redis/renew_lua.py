"""Redis' own time per live call in renew.lua, without the server: loads header + prelude + renew
(from files, so a variant of the Lua is measured without a build), takes CALLS live calls (slot,
lock and a state as the server writes one after a minute of echo), then runs TICKS ticks of one
script per 100 calls, as a replica's renewal does, and prints EVALSHA's usec per call from INFO
commandstats. Usage: python3 renew_lua.py PRELUDE RENEW [CALLS] [TICKS]"""
import os, sys, time

from luabench import Redis, lua_source

calls = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
ticks = int(sys.argv[4]) if len(sys.argv) > 4 else 50
STATE = ('{"call_sid":"%s","stream_sid":"MZ%032x","account_sid":"AC46678e78e34a65ca41777ea73a976619",'
         '"from":"+15005550006","to":"+15005550001","status":"live","replica":"vm-22200",'
         '"stream_url":"ws://127.0.0.1:32529/twilio/stream","created_at":"2026-12-06T20:37:40.473636384Z",'
         '"started_at":"2026-12-06T20:37:40.512345678Z","ended_at":null,"end_reason":null,'
         '"media_format":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},"custom_parameters":{},'
         '"frames_in":%d,"frames_out":%d,"bytes_in":%d,"dtmf":"","marks":[],"tenant":null,"resumes":0,'
         '"handovers":0,"stream_token":false,"direction":"inbound"}')

redis = Redis()
try:
    sha = redis.cmd("SCRIPT", "LOAD", lua_source(sys.argv[1], sys.argv[2])).decode()
    now = int(time.time() * 1000)
    sids = ["CA%032x" % i for i in range(calls)]
    for i, sid in enumerate(sids):
        redis.send("ZADD", "calls:slots", now + 30000, sid)
        redis.send("SET", "calls:lock:" + sid, "token-%d" % i, "PX", 60000)
        redis.send("SET", "calls:state:" + sid, STATE % (sid, i, 0, 0, 0), "EX", 3600)
    for _ in range(3 * calls):
        redis.read()
    # The epoch this replica saw: no data-loss path in the measured ticks.
    epoch = str(now)
    redis.cmd("SET", "calls:epoch", epoch)
    redis.cmd("CONFIG", "RESETSTAT")
    for tick in range(ticks):
        for start in range(0, calls, 100):
            chunk = sids[start:start + 100]
            keys = ["calls:slots", "calls:active_count", "calls:epoch", "calls:replica:vm-22200"]
            argv = [30000, 60000, 3600, 15000, '{"id":"vm-22200"}', 30000, epoch, 0, 1 if start == 0 else 0]
            for j, sid in enumerate(chunk):
                i = start + j
                keys += ["calls:lock:" + sid, "calls:state:" + sid]
                n = 500 * (tick + 1)
                argv += [sid, "token-%d" % i, STATE % (sid, i, n, n, 160 * n), ""]
            reply = redis.cmd("EVALSHA", sha, len(keys), *keys, *argv)
            if tick == 0 and start == 0 and os.environ.get("SHOW"):
                print(reply)
    usec = redis.evalsha_usec()
    sample = redis.cmd("GET", "calls:state:" + sids[7]).decode()
    frames_in = sample.split('frames_in":')[1].split(",")[0]
    zcard = int(redis.cmd("ZCARD", "calls:slots"))
    print(f"{calls} calls, {ticks} ticks: {usec / (calls * ticks):.2f} µs per call per tick "
          f"(ZCARD {zcard}, frames_in of one call {frames_in})")
finally:
    redis.close()

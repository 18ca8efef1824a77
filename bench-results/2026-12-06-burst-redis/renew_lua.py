"""Redis' own time per live call in renew.lua, without the server: loads header + prelude + renew
(from files, so a variant of the Lua is measured without a build), takes CALLS live calls (slot,
lock and a state as the server writes one after a minute of echo), then runs TICKS ticks of one
script per 100 calls, as a replica's renewal does, and prints EVALSHA's usec per call from INFO
commandstats. Usage: python3 renew_lua.py PRELUDE RENEW [CALLS] [TICKS]"""
import os, socket, subprocess, sys, tempfile, time

prelude, renew = open(sys.argv[1]).read(), open(sys.argv[2]).read()
calls = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
ticks = int(sys.argv[4]) if len(sys.argv) > 4 else 50
header = """local SLOT_TENANT_KEY = 'calls:slot_tenant'
local TENANT_LIMITS_KEY = 'calls:tenant_limits'
local REJECTED_TENANT_LIMIT_KEY = 'calls:stats:rejected_tenant_limit'
local RENEWED_UNTIL_KEY = 'calls:renewed_until'
local function tenant_slots_key(tenant)
  return 'calls:tenant:' .. tenant .. ':slots'
end
local function outbound_key(id)
  return 'calls:outbound:' .. id
end
"""
source = header + "\n" + prelude + "\n" + renew
STATE = ('{"call_sid":"%s","stream_sid":"MZ%032x","account_sid":"AC46678e78e34a65ca41777ea73a976619",'
         '"from":"+15005550006","to":"+15005550001","status":"live","replica":"vm-22200",'
         '"stream_url":"ws://127.0.0.1:32529/twilio/stream","created_at":"2026-12-06T20:37:40.473636384Z",'
         '"started_at":"2026-12-06T20:37:40.512345678Z","ended_at":null,"end_reason":null,'
         '"media_format":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},"custom_parameters":{},'
         '"frames_in":%d,"frames_out":%d,"bytes_in":%d,"dtmf":"","marks":[],"tenant":null,"resumes":0,'
         '"handovers":0,"stream_token":false,"direction":"inbound"}')

d = tempfile.mkdtemp()
sock_path = os.path.join(d, "redis.sock")
server = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", sock_path, "--save", "",
                           "--appendonly", "no", "--dir", d], stdout=subprocess.DEVNULL)
try:
    for _ in range(100):
        if os.path.exists(sock_path):
            break
        time.sleep(0.05)
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    f = s.makefile("rb")

    def send(*args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        s.sendall(out)

    def read():
        line = f.readline()
        t, rest = line[:1], line[1:-2]
        if t in (b"+", b":"):
            return rest
        if t == b"-":
            raise RuntimeError(rest.decode())
        if t == b"$":
            ln = int(rest)
            return None if ln < 0 else f.read(ln + 2)[:-2]
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [read() for _ in range(n)]
        raise RuntimeError(line)

    def cmd(*args):
        send(*args)
        return read()

    sha = cmd("SCRIPT", "LOAD", source).decode()
    now = int(time.time() * 1000)
    sids = ["CA%032x" % i for i in range(calls)]
    for i, sid in enumerate(sids):
        send("ZADD", "calls:slots", now + 30000, sid)
        send("SET", "calls:lock:" + sid, "token-%d" % i, "PX", 60000)
        send("SET", "calls:state:" + sid, STATE % (sid, i, 0, 0, 0), "EX", 3600)
    for _ in range(3 * calls):
        read()
    epoch = str(now)
    cmd("SET", "calls:epoch", epoch)
    cmd("CONFIG", "RESETSTAT")
    for tick in range(ticks):
        for start in range(0, calls, 100):
            chunk = sids[start:start + 100]
            keys = ["calls:slots", "calls:active_count", "calls:epoch", "calls:replica:vm-22200"]
            argv = [30000, 60000, 3600, 15000, '{"id":"vm-22200"}', 30000, epoch, 0, 1 if start == 0 else 0]
            for j, sid in enumerate(chunk):
                i = start + j
                keys += ["calls:lock:" + sid, "calls:state:" + sid]
                argv += [sid, "token-%d" % i, STATE % (sid, i, 500 * (tick + 1), 500 * (tick + 1), 80000 * (tick + 1)), ""]
            reply = cmd("EVALSHA", sha, len(keys), *keys, *argv)
            if tick == 0 and start == 0 and os.environ.get("SHOW"):
                print(reply)
    stats = cmd("INFO", "commandstats").decode()
    line = [l for l in stats.splitlines() if l.startswith("cmdstat_evalsha:")][0]
    usec = int(line.split("usec=")[1].split(",")[0])
    sample = cmd("GET", "calls:state:" + sids[7]).decode()
    frames_in = sample.split('frames_in":')[1].split(",")[0]
    zcard = int(cmd("ZCARD", "calls:slots"))
    print(f"{calls} calls, {ticks} ticks: {usec / (calls * ticks):.2f} µs per call per tick "
          f"(ZCARD {zcard}, frames_in of one call {frames_in})")
finally:
    server.terminate()
    server.wait()

"""Redis' own time per admission in admit.lua, without the server: loads header + prelude + admit
(from files, so a variant of the Lua is measured without a build), then runs REPS batches of N new
admissions (a state JSON as the server writes one) on a fresh redis-server, and prints EVALSHA's
usec per admission from INFO commandstats.
Usage: python3 admit_lua.py PRELUDE ADMIT [N] [REPS]  (redis-server on PATH; Linux)"""
import os, socket, subprocess, sys, tempfile, time

prelude, admit = open(sys.argv[1]).read(), open(sys.argv[2]).read()
n = int(sys.argv[3]) if len(sys.argv) > 3 else 55
reps = int(sys.argv[4]) if len(sys.argv) > 4 else 200
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
source = header + "\n" + prelude + "\n" + admit

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

    def cmd(*args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        s.sendall(out)
        return read()

    def read():
        line = f.readline()
        t, rest = line[:1], line[1:-2]
        if t in (b"+", b":"):
            return rest
        if t == b"-":
            raise RuntimeError(rest.decode())
        if t == b"$":
            ln = int(rest)
            if ln < 0:
                return None
            data = f.read(ln + 2)[:-2]
            return data
        if t == b"*":
            return [read() for _ in range(int(rest))]
        raise RuntimeError(line)

    sha = cmd("SCRIPT", "LOAD", source).decode()
    cmd("CONFIG", "RESETSTAT")
    for rep in range(reps):
        keys = ["calls:slots", "calls:active_count", "calls:stats:started",
                "calls:stats:rejected_max_concurrent", "calls:epoch"]
        argv = [int(os.environ.get("LIMIT", 100000)), 15000, 3600, "", 0, ""]
        now = int(time.time() * 1000)
        for i in range(n):
            sid = "CA%032x" % (rep * 1000 + i)
            keys.append("calls:state:" + sid)
            state = ('{"call_sid":"%s","stream_sid":null,"account_sid":"AC46678e78e34a65ca41777ea73a976619",'
                     '"from":"+15005550006","to":"+15005550001","status":"reserved","replica":"vm-22200",'
                     '"stream_url":"ws://127.0.0.1:32529/twilio/stream","created_at":"2026-12-06T20:37:40.473636384Z",'
                     '"started_at":null,"ended_at":null,"end_reason":null,"media_format":null,"custom_parameters":{},'
                     '"frames_in":0,"frames_out":0,"bytes_in":0,"dtmf":"","marks":[],"tenant":null,"resumes":0,'
                     '"handovers":0,"stream_token":false,"direction":"inbound"}') % sid
            argv += [sid, 30000, "take", state, "", now + 60000]
        reply = cmd("EVALSHA", sha, len(keys), *keys, *argv)
        if rep == 0 and os.environ.get("SHOW"):
            print(reply[:3], reply[3][:6])
        if rep % 20 == 19:
            cmd("DEL", "calls:slots")  # keep the ZSET at a burst's size
    stats = cmd("INFO", "commandstats").decode()
    line = [l for l in stats.splitlines() if l.startswith("cmdstat_evalsha:")][0]
    usec = int(line.split("usec=")[1].split(",")[0])
    started = int(cmd("GET", "calls:stats:started"))
    active = cmd("GET", "calls:active_count").decode()
    zcard = int(cmd("ZCARD", "calls:slots"))
    rejected = cmd("GET", "calls:stats:rejected_max_concurrent")
    print(f"rejected {rejected}; ", end="")
    print(f"{n} admissions per batch, {reps} batches: {usec / (n * reps):.2f} µs per admission "
          f"(started {started}, active_count {active}, ZCARD {zcard})")
finally:
    server.terminate()
    server.wait()

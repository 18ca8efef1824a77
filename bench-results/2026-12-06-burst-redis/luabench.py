"""What admit_lua.py and renew_lua.py share: a fresh redis-server on a unix socket of its own, a
minimal RESP client, and a script's source as the replica loads it (key header + prelude + body)."""
import os, socket, subprocess, tempfile, time

# The key names of crates/calls-core/src/keys.rs::lua_key_header.
HEADER = """local SLOT_TENANT_KEY = 'calls:slot_tenant'
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


def lua_source(prelude_path, body_path):
    return HEADER + "\n" + open(prelude_path).read() + "\n" + open(body_path).read()


class Redis:
    """A redis-server started for this run (stopped by close()), and one connection to it."""

    def __init__(self):
        d = tempfile.mkdtemp()
        path = os.path.join(d, "redis.sock")
        self.server = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", path, "--save", "",
                                        "--appendonly", "no", "--dir", d], stdout=subprocess.DEVNULL)
        for _ in range(100):
            if os.path.exists(path):
                break
            time.sleep(0.05)
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.reader = self.sock.makefile("rb")

    def close(self):
        self.server.terminate()
        self.server.wait()

    def send(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)

    def read(self):
        line = self.reader.readline()
        t, rest = line[:1], line[1:-2]
        if t in (b"+", b":"):
            return rest
        if t == b"-":
            raise RuntimeError(rest.decode())
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self.reader.read(n + 2)[:-2]
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise RuntimeError(line)

    def cmd(self, *args):
        self.send(*args)
        return self.read()

    def evalsha_usec(self):
        """EVALSHA's total usec since the last CONFIG RESETSTAT."""
        stats = self.cmd("INFO", "commandstats").decode()
        line = [l for l in stats.splitlines() if l.startswith("cmdstat_evalsha:")][0]
        return int(line.split("usec=")[1].split(",")[0])

#!/usr/bin/env bash
# CPU per webhook, split into user and system time, of several servers in 500-webhook bursts,
# alternating: each pinned to CPU 0 (a fresh redis-server and the simulator on CPU 1), `perf stat`
# on the process over BURSTS bursts after one warm-up burst (the user / system split from the
# share of `perf record` cpu-clock samples in the kernel); also each burst's p99.
# A VARIANT is NAME=BINARY[,VAR=VALUE...]; a BINARY named bare_webhook* is a floor (its address
# as its argument, no Redis), anything else is prosaas-calls with Redis (RUST_LOG=info, its log to
# a file as scripts/bench does); a VAR given overrides those (REDIS_URL= for the in-process store).
# Usage: burst-cpu.sh ROUNDS BURSTS VARIANT...   (from the repository's root)
set -u
source scripts/lib/ports.sh
rounds=$1 bursts=$2; shift 2
sock=/tmp/burst-cpu-$$.sock
taskset -c 1 redis-server --port 0 --unixsocket "$sock" --save "" --appendonly no --maxclients 10000 >/dev/null 2>&1 & rpid=$!
trap 'kill $rpid 2>/dev/null; wait $rpid 2>/dev/null; rm -f $sock /tmp/burst-cpu-$$.perf /tmp/burst-cpu-$$.data /tmp/burst-cpu-$$.log' EXIT
for _ in $(seq 50); do [ "$(redis-cli -s "$sock" ping 2>/dev/null)" = PONG ] && break; sleep 0.1; done
measure() {
  local spec=$1 name bin parts envs port spid ppid
  name=${spec%%=*}; bin=${spec#*=}; IFS=, read -ra parts <<< "$bin"; bin=${parts[0]}; envs=("${parts[@]:1}")
  port=$(free_port)
  redis-cli -s "$sock" flushall >/dev/null
  case "$(basename "$bin")" in
    bare_webhook*) env "${envs[@]}" taskset -c 0 "$bin" "127.0.0.1:$port" >/dev/null 2>&1 & spid=$! ;;
    *) RUST_LOG=info REDIS_URL="redis+unix://$sock" PUBLIC_URL=https://calls.example.com \
         MAX_CONCURRENT_CALLS=$((500 * bursts + 1000)) MEDIA_HANDLER=echo LISTEN_ADDR=127.0.0.1:$port \
         env "${envs[@]}" taskset -c 0 "$bin" >/tmp/burst-cpu-$$.log 2>&1 & spid=$! ;;
  esac
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  sleep 0.5
  taskset -c 1 target/release/prosaas-calls-sim --target "http://127.0.0.1:$port" --burst 500 --threads 1 >/dev/null
  sleep 0.3
  perf stat -e task-clock,context-switches -x, -p "$spid" -o /tmp/burst-cpu-$$.perf & ppid=$!
  # The user / system split: the share of cpu-clock samples in the kernel (perf stat cannot
  # split an attached process's time).
  # SPLIT=0 leaves it out: sampling itself costs the process 15-30 %.
  local rec=""
  if [ "${SPLIT:-1}" = 1 ]; then
    perf record -q -F 9999 -e cpu-clock -p "$spid" -o /tmp/burst-cpu-$$.data >/dev/null 2>&1 & rec=$!
  fi
  sleep 0.3
  local p99s=""
  for _ in $(seq "$bursts"); do
    p99s="$p99s $(taskset -c 1 target/release/prosaas-calls-sim --target "http://127.0.0.1:$port" --burst 500 --threads 1 | awk '/^webhook latency/ {print $7}')"
  done
  sleep 0.3
  kill -INT "$ppid" $rec; wait "$ppid" $rec 2>/dev/null
  local kshare=nan
  [ -n "$rec" ] && kshare=$(perf report -i /tmp/burst-cpu-$$.data --sort dso --stdio 2>/dev/null | awk '/\[kernel.kallsyms\]/ {gsub("%", "", $1); print $1 / 100}')
  kill "$spid"; wait "$spid" 2>/dev/null
  python3 - "$name" "$((500 * bursts))" "$p99s" /tmp/burst-cpu-$$.perf "$kshare" <<'PY'
import sys
name, n, p99s, path, kshare = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5])
v = {}
for line in open(path):
    f = line.strip().split(',')
    if len(f) > 3 and f[0] and f[0][0].isdigit():
        v[f[2]] = float(f[0]); v[f[2] + ':unit'] = f[1]
def us(event):
    x = v.get(event)
    if x is None: return float('nan')
    unit = v.get(event + ':unit', '')
    scale = {'msec': 1e3, 'ns': 1e-3, 'us': 1.0, 'usec': 1.0}.get(unit, 1e-3)
    return x * scale / n
cpu = us('task-clock')
print(f"{name:10s} cpu {cpu:6.1f} us  user {cpu * (1 - kshare):6.1f}  sys {cpu * kshare:6.1f}  cs {v.get('context-switches', 0) / n:5.2f} /webhook; p99 ms:{p99s}")
PY
}
echo "# burst-cpu.sh $rounds $bursts $*  ($(date -u +%FT%TZ), load $(cut -d' ' -f1 /proc/loadavg))"
for _ in $(seq "$rounds"); do
  for spec in "$@"; do measure "$spec"; done
done

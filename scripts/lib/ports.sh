# shellcheck shell=bash
# Sourced by every script that starts a listener on loopback: one way to pick its port, below the
# kernel's ephemeral range, so the outgoing sockets a run opens by the thousand cannot hold it.
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib/ports.sh"
#   port="$(free_port)"               # nobody listens on it now, and no client is handed it
#
# Why below the range: a port picked at random (or by binding port 0, which draws from the same
# range) can be the local port of one of the simulator's connections by the time a server binds
# it, and the bind fails ("did not start"). The kernel never gives an outgoing connection a port
# below ip_local_port_range. The tests' harness draws its ports by the same rule
# (crates/testkit/src/ports.rs): a change to one belongs in the other.

# The range free_port draws from, as "BASE CEILING": 10000 up to the lowest ephemeral port, or
# 20000 to 40000 when the ephemeral range starts too low to leave room below it.
_port_range() {
    local low
    low="$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true)"
    [[ "$low" =~ ^[0-9]+$ ]] || low=32768
    if ((low > 11000)); then echo "10000 $low"; else echo "20000 40000"; fi
}

# A loopback port nobody listens on right now.
free_port() {
    local base ceiling port
    read -r base ceiling < <(_port_range)
    while :; do
        port=$((base + (RANDOM * 32768 + RANDOM) % (ceiling - base)))
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
    done
}

# First port of a run of COUNT consecutive free ports (scripts/cluster takes BASE..BASE+COUNT-1),
# or nothing after 200 tries.
free_port_run() {
    local count="$1" base ceiling start offset taken
    read -r base ceiling < <(_port_range)
    for _ in $(seq 200); do
        start="$(free_port)"
        ((start + count <= ceiling)) || continue
        taken=0
        for offset in $(seq 1 $((count - 1))); do
            (exec 3<>"/dev/tcp/127.0.0.1/$((start + offset))") 2>/dev/null && { taken=1; break; }
        done
        [[ "$taken" == 0 ]] && { echo "$start"; return; }
    done
}

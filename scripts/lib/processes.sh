# shellcheck shell=bash
# Sourced by every script that starts processes: whatever it started is stopped on any exit —
# success, failure, Ctrl-C, SIGTERM, SIGHUP, or a reader that went away (`scripts/x | head`
# raises SIGPIPE at the next write) — by the PIDs it recorded, never by name.
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib/processes.sh"
#   some-server & pids+=("$!")        # stopped at exit: SIGTERM, then SIGKILL after STOP_GRACE_SECS
#   at_exit 'rm -rf "$work"'          # run after the processes are gone
#   stop_pid "$pid"                   # stop one now (and forget it)
#
# A replica drains on SIGTERM for up to DRAIN_TIMEOUT_SECS; a script's own processes get
# STOP_GRACE_SECS (default 10) before SIGKILL, so an interrupted run never lingers for minutes.

pids=()
_at_exit_commands=()
STOP_GRACE_SECS="${STOP_GRACE_SECS:-10}"

# Registers a command (one string, evaluated) to run at exit, after the processes are stopped.
at_exit() { _at_exit_commands+=("$1"); }

# SIGTERM to each PID, SIGKILL to any still there after STOP_GRACE_SECS, then reaps them.
_stop_all() {
    local pid deadline=$((SECONDS + STOP_GRACE_SECS)) alive
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    while :; do
        alive=0
        for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [[ "$alive" == 0 || "$SECONDS" -ge "$deadline" ]] && break
        sleep 0.1
    done
    for pid in "$@"; do kill -KILL "$pid" 2>/dev/null || true; done
    for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
}

# Stops one recorded process now and forgets it.
stop_pid() {
    local kept=() p
    _stop_all "$1"
    for p in "${pids[@]}"; do [[ "$p" == "$1" ]] || kept+=("$p"); done
    pids=("${kept[@]}")
}

_on_exit() {
    local status=$? command
    # The reader may be gone (SIGPIPE) and a second Ctrl-C must not cut the clean-up short:
    # from here on writes may fail quietly and those signals are ignored.
    trap '' PIPE INT TERM HUP
    [[ "${#pids[@]}" -gt 0 ]] && _stop_all "${pids[@]}"
    for command in "${_at_exit_commands[@]}"; do eval "$command" 2>/dev/null || true; done
    exit "$status"
}
trap _on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
trap 'exit 141' PIPE

#!/bin/bash
# cpu.sh PID... : ns on CPU of each pid (all threads)
for p in "$@"; do s=0; for t in /proc/$p/task/*/schedstat; do s=$((s+$(cut -d' ' -f1 $t))); done; echo $s; done | paste -sd' '

#!/usr/bin/env bash
# Counts what a tiny `Executor::processes(2).submit` gathered by
# `as_completed` costs per task, in numbers that load does not change:
# instructions (callgrind, per thread of the parent and per worker),
# context switches and page faults (perf stat, parent and workers), system
# calls (strace -f -c). Runs examples/many_submits with N tasks (100,000 by
# default) and, to take away the fixed cost (start-up, the warm-up), with
# none. Not part of CI: a tool for changing the submit path.
#
#   bash ci/profile/submits.sh [N]
#
# With SUBMITS_EXE set, that build of the example is counted instead (to
# compare with an earlier commit's). Needs valgrind, perf, strace and a C
# compiler.
set -euo pipefail
cd "$(dirname "$0")/../.."
n="${1:-100000}"
if [ -n "${SUBMITS_EXE:-}" ]; then
    exe="$SUBMITS_EXE"
else
    cargo build --release --example many_submits
    exe="$PWD/target/release/examples/many_submits"
fi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
cc -shared -fPIC -O2 -o "$out/spawn_exe.so" ci/profile/spawn_exe.c -ldl

callgrind() { # tasks -> "file total" per thread, in $out/cg.$1
    mkdir -p "$out/cg.$1"
    (cd "$out/cg.$1" && LD_PRELOAD="$out/spawn_exe.so" valgrind --tool=callgrind \
        --separate-threads=yes --trace-children=yes "$exe" "$1" >/dev/null 2>&1)
}
sum() { # directory, pid -> instructions of that process's threads
    cat "$1"/callgrind.out."$2"-* | sed -n 's/^summary: //p' | paste -sd+ | bc
}
callgrind 0
callgrind "$n"
parent_of() { ls "$1" | sed -n 's/^callgrind\.out\.\([0-9]*\)$/\1/p' | sort -n | head -1; }
p0="$(parent_of "$out/cg.0")"
p1="$(parent_of "$out/cg.$n")"
base="$(sum "$out/cg.0" "$p0")"
echo "instructions per task ($n tasks, less a run of none):"
echo "  parent, all threads: $(( ($(sum "$out/cg.$n" "$p1") - base) / n ))"
for f in "$out/cg.$n"/callgrind.out."$p1"-*; do
    t="$(sed -n 's/^summary: //p' "$f")"
    echo "    thread ${f##*-}: $(( t / n )) (with its share of the fixed cost)"
done
workers=0
for pid in $(ls "$out/cg.$n" | sed -n 's/^callgrind\.out\.\([0-9]*\)$/\1/p' | sort -n | tail -n +2); do
    workers=$(( workers + $(sum "$out/cg.$n" "$pid") ))
done
echo "  workers, together: $(( workers / n ))"

perf_counts() {
    perf stat -x, -e context-switches,page-faults -- "$exe" "$1" 2>&1 >/dev/null |
        awk -F, '{printf "%s=%s ", $3, $1}'
}
echo "perf stat, $n tasks: $(perf_counts "$n")"
echo "perf stat, none:     $(perf_counts 0)"
strace -f -c -o "$out/strace" "$exe" "$n" >/dev/null
echo "strace -f -c, $n tasks (calls, errors):"
awk '$NF ~ /^(sendmsg|recvmsg|futex|ppoll|sched_yield|total)$/ {print "  " $0}' "$out/strace"

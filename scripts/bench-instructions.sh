#!/usr/bin/env bash
# Instructions per request: cutover against the floor of its own stack
# (examples/bench_floor.rs, mirroring), each run under valgrind's callgrind
# with the same load, for a 1 KB and a 64 KB JSON body.
#
# scripts/bench-proxy.sh measures time, which on a shared 2-core machine
# moves ±20% from run to run; an instruction count is the same for the
# same binary and load whatever else the machine does, so a change of a
# few percent shows. It counts user space only: the kernel's share (the
# sockets) is the same for both and is not in these figures.
#
# Each process is warmed up with 500 requests, its counters are zeroed,
# then REQUESTS requests are sent at 200 req/s (4 connections) and the
# counters dumped. Allocations per request are the calls into Rust's
# allocator (scripts/callgrind-calls.py); sqlite's own are not among them.
# The profiles are kept in OUT (default: a new temporary
# directory) for callgrind_annotate.
#
# Needs valgrind (callgrind_control) and oha (cargo install oha).
#
# Usage: scripts/bench-instructions.sh [REQUESTS] [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-config.sh

REQUESTS=${1:-3000}
OUT=${2:-$(mktemp -d)}
PRIMARY_PORT=28081
SHADOW_PORT=28082
PROXY_PORT=28080
ADMIN_PORT=28990

bench_require bench-instructions "apt-get install valgrind; cargo install oha" valgrind callgrind_control oha
mkdir -p "$OUT"
bench_start $PRIMARY_PORT $SHADOW_PORT

# count NAME PATH COMMAND...: prints the instructions per request of COMMAND serving PATH.
count() {
    local name=$1 path=$2
    shift 2
    valgrind --tool=callgrind --callgrind-out-file="$OUT/$name.cg" "$@" 2>"$work/$name.log" &
    local pid=$!
    pids+=("$pid")
    for _ in $(seq 120); do
        curl -s -o /dev/null "http://127.0.0.1:$PROXY_PORT$path" && break
        sleep 1
    done
    oha -n 500 -c 4 --no-tui "http://127.0.0.1:$PROXY_PORT$path" >/dev/null
    sleep 2
    callgrind_control -z "$pid" >/dev/null 2>&1
    oha -n "$REQUESTS" -c 4 -q 200 --no-tui "http://127.0.0.1:$PROXY_PORT$path" >/dev/null
    sleep 2
    callgrind_control -d "$pid" >/dev/null 2>&1
    sleep 1
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    local dump
    dump=$(ls "$OUT/$name.cg".* | tail -1)
    echo "$(awk -v n="$REQUESTS" '/^totals:/ { printf "%.0f\n", $2 / n }' "$dump") $(scripts/callgrind-calls.py "$dump" "$REQUESTS" '' 0)"
}

printf '%-6s %-14s %12s %7s %11s\n' body via instr/req ratio allocs/req
for size in 1k 64k; do
    rm -f "$work/store.db"*
    bench_config $PROXY_PORT $ADMIN_PORT $PRIMARY_PORT $SHADOW_PORT "$work/store.db" >"$work/cutover.toml"
    floor=$(count "floor-$size" "/json/$size" target/release/examples/bench_floor --listen "127.0.0.1:$PROXY_PORT" \
        --primary "http://127.0.0.1:$PRIMARY_PORT" --shadow "http://127.0.0.1:$SHADOW_PORT")
    cutover=$(count "cutover-$size" "/json/$size" target/release/cutover serve -c "$work/cutover.toml")
    read -r floor floor_allocs <<<"$floor"
    read -r cutover cutover_allocs <<<"$cutover"
    printf '%-6s %-14s %12s %7s %11s\n' "$size" floor-mirror "$floor" 1.00x "$floor_allocs"
    printf '%-6s %-14s %12s %6.2fx %11s\n' "$size" cutover "$cutover" "$(echo "$cutover / $floor" | bc -l)" "$cutover_allocs"
done
echo "profiles: $OUT (callgrind_annotate --inclusive=yes FILE;"
echo "  where the allocations are made: scripts/callgrind-calls.py FILE $REQUESTS)"

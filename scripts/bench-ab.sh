#!/usr/bin/env bash
# Two cutover builds side by side, measured interleaved on the same
# backends, so a change is judged against its base in one run (on a shared
# machine, throughput moves ±20% between runs; CPU per request is steadier).
#
# Per round and build: CPU time per request at a fixed rate (process
# user + system time from /proc, over oha at RATE req/s for 8 s after a
# 2 s warm-up) with the p99 there, then requests/s at saturation (wrk).
# A JSON body of SIZE (1k or 64k; 1k unless told), mirroring and comparison on for every request, SQLite store.
#
# Usage: scripts/bench-ab.sh BIN_A BIN_B [ROUNDS] [RATE] [SIZE]
#   e.g. git worktree add /tmp/base HEAD~1 && (cd /tmp/base && cargo build --release --bin cutover)
#        scripts/bench-ab.sh /tmp/base/target/release/cutover target/release/cutover 3
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-config.sh
A=$1; B=$2; ROUNDS=${3:-3}; RATE=${4:-4000}; SIZE=${5:-1k}
bench_require bench-ab "wrk: apt-get install wrk; oha: cargo install oha" wrk oha
bench_start 18181 18182
bench_serve "$A" 18180 18990 18181 18182
a_pid=$served_pid
bench_serve "$B" 18185 18995 18181 18182
b_pid=$served_pid
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
cpu() { # PID PORT -> "µs/request p99"
    oha -z 2s -q "$RATE" -c 32 --no-tui "http://127.0.0.1:$2/json/$SIZE" >/dev/null
    local before after result
    before=$(ticks "$1")
    result=$(oha -z 8s -q "$RATE" -c 32 --latency-correction --no-tui --output-format json "http://127.0.0.1:$2/json/$SIZE" |
        python3 -c 'import json, sys; d = json.load(sys.stdin); print(sum(d["statusCodeDistribution"].values()), d["latencyPercentiles"]["p99"] * 1000)')
    after=$(ticks "$1")
    python3 -c "import sys; n, p99 = sys.argv[1], sys.argv[2]; print(f'{($after - $before) / $(getconf CLK_TCK) * 1e6 / int(n):6.1f} us/req, p99 {float(p99):.3f} ms')" $result
}
rps() { wrk -t1 -c32 -d6s "http://127.0.0.1:$1/json/$SIZE" | awk '/Requests\/sec/ {print $2}'; }
echo "A = $A"; echo "B = $B"
for round in $(seq "$ROUNDS"); do
    echo "round $round: A $(cpu "$a_pid" 18180), $(rps 18180) req/s | B $(cpu "$b_pid" 18185), $(rps 18185) req/s"
    sleep 2
done

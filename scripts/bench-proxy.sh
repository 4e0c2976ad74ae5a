#!/usr/bin/env bash
# Proxy benchmark: a direct connection to the primary (a) against the same
# load through cutover with mirroring and comparison on for every request
# (b), measured in one run, interleaved, for a 1 KB and a 64 KB JSON body.
#
#   throughput: wrk at saturation (closed loop), requests/s
#   latency:    oha at a fixed rate with latency correction, p50 and p99,
#               in steady state (mirror queue drained after the saturation
#               run, then 2 s of unmeasured warm-up at the same rate)
#
# Prints b/a ratios, how many connections cutover held open to the shadow
# during the load (pooling: a handful, never one per request), and
# cutover's own outcome counts (every request compared, none dropped).
#
# Needs wrk (apt-get install wrk) and oha (cargo install oha).
# Everything runs on loopback and stops by itself.
#
# Usage: scripts/bench-proxy.sh [SECONDS_PER_RUN] [FIXED_RATE] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN=${1:-8}
RATE=${2:-2000}
ROUNDS=${3:-2}
CONNECTIONS=${CONNECTIONS:-32}
PRIMARY_PORT=18081
SHADOW_PORT=18082
PROXY_PORT=18080
ADMIN_PORT=18990

for tool in wrk oha; do
    command -v "$tool" >/dev/null || { echo "bench-proxy: needs $tool (wrk: apt-get install wrk; oha: cargo install oha)" >&2; exit 2; }
done

cargo build --release --quiet --bin cutover --example backend
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

target/release/examples/backend --listen 127.0.0.1:$PRIMARY_PORT --name bench 2>/dev/null & pids+=($!)
target/release/examples/backend --listen 127.0.0.1:$SHADOW_PORT --name bench 2>/dev/null & pids+=($!)
cat > "$work/bench.toml" <<EOF
[listen]
proxy = "127.0.0.1:$PROXY_PORT"
admin = "127.0.0.1:$ADMIN_PORT"

[primary]
name = "primary"
url = "http://127.0.0.1:$PRIMARY_PORT"

[shadow]
name = "shadow"
url = "http://127.0.0.1:$SHADOW_PORT"

[mirror]
queue = 10000
unmatched = "reads"

[[route]]
name = "json"
match = "GET /json/*"
mirror = "compare"
EOF
RUST_LOG=warn target/release/cutover serve -c "$work/bench.toml" 2>"$work/cutover.log" & pids+=($!)
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$ADMIN_PORT/healthz" >/dev/null && break; sleep 0.1; done

rps() { # URL -> requests/s at saturation
    wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" "$1" | awk '/Requests\/sec/ {print $2}'
}
percentiles() { # URL -> "p50_ms p99_ms" at the fixed rate, latency-corrected
    oha -z "${SECONDS_PER_RUN}s" -q "$RATE" -c "$CONNECTIONS" --latency-correction --no-tui --output-format json "$1" \
        | python3 -c 'import json,sys; d=json.load(sys.stdin)["latencyPercentiles"]; print(d["p50"]*1000, d["p99"]*1000)'
}
drained() { # waits (at most 60 s) until cutover has no mirrored exchange in flight
    for _ in $(seq 600); do
        depth=$(curl -sf "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '/^cutover_mirror_queue_depth / {print $2}')
        [ "${depth:-0}" = "0" ] && return
        sleep 0.1
    done
}
steady_percentiles() { # latency at the fixed rate in steady state: queue drained, then a short unmeasured warm-up
    drained
    oha -z 2s -q "$RATE" -c "$CONNECTIONS" --no-tui "$1" >/dev/null
    percentiles "$1"
}
mean() { python3 -c 'import sys; v=[float(x) for x in sys.argv[1:]]; print(sum(v)/len(v))' "$@"; }

printf '%-6s %12s %12s %7s | %9s %9s %9s %9s | %8s\n' body direct_rps proxy_rps ratio d_p50ms p_p50ms d_p99ms p_p99ms p99_add
for size in 1k 64k; do
    direct="http://127.0.0.1:$PRIMARY_PORT/json/$size"
    proxied="http://127.0.0.1:$PROXY_PORT/json/$size"
    curl -sf "$direct" >/dev/null && curl -sf "$proxied" >/dev/null
    d_rps=(); p_rps=(); d50=(); p50=(); d99=(); p99=()
    for _ in $(seq "$ROUNDS"); do
        d_rps+=("$(rps "$direct")")
        p_rps+=("$(rps "$proxied")")
        oha -z 2s -q "$RATE" -c "$CONNECTIONS" --no-tui "$direct" >/dev/null
        read -r a b <<<"$(percentiles "$direct")"; d50+=("$a"); d99+=("$b")
        read -r a b <<<"$(steady_percentiles "$proxied")"; p50+=("$a"); p99+=("$b")
    done
    dr=$(mean "${d_rps[@]}"); pr=$(mean "${p_rps[@]}")
    dp50=$(mean "${d50[@]}"); pp50=$(mean "${p50[@]}"); dp99=$(mean "${d99[@]}"); pp99=$(mean "${p99[@]}")
    python3 - "$size" "$dr" "$pr" "$dp50" "$pp50" "$dp99" "$pp99" <<'EOF'
import sys
size, dr, pr, d50, p50, d99, p99 = sys.argv[1], *map(float, sys.argv[2:])
print(f"{size:<6} {dr:12.0f} {pr:12.0f} {pr/dr:6.2f}x | {d50:9.3f} {p50:9.3f} {d99:9.3f} {p99:9.3f} | {p99-d99:+7.3f}ms")
EOF
done

# Pooling: connections held to the shadow while a short load runs.
wrk -t1 -c"$CONNECTIONS" -d3s "http://127.0.0.1:$PROXY_PORT/json/1k" >/dev/null &
sleep 1.5
shadow_conns=$(ss -Htn state established "( dport = :$SHADOW_PORT )" | wc -l)
wait $!
echo "connections from cutover to the shadow during load: $shadow_conns (client connections: $CONNECTIONS)"

sleep 1
metrics=$(curl -sf "http://127.0.0.1:$ADMIN_PORT/metrics")
echo "cutover outcomes:"
grep -E '^cutover_requests_total' <<<"$metrics" | sed 's/^/  /'
grep -E '^cutover_mirror_dropped_total' <<<"$metrics" | grep -v ' 0$' | sed 's/^/  /' || echo "  nothing dropped"

#!/usr/bin/env bash
# Proxy benchmark: a direct connection to the primary (a) against the same
# load through cutover with mirroring and comparison on for every request
# (b), measured in one run, interleaved, for a 1 KB and a 64 KB JSON body.
#
#   throughput: wrk at saturation (closed loop), requests/s
#   latency:    oha at a fixed rate with latency correction, p50 and p99,
#               in steady state (mirror queue drained after the saturation
#               run, then 2 s of unmeasured warm-up at the same rate)
#   CPU:        the proxy's own CPU time (user + system, from /proc) per
#               request during the fixed-rate run: steadier than either
#               figure above on a shared machine
#
# Besides cutover it measures the floor of cutover's stack (hyper and tokio
# forwarding, with and without mirroring, and nothing else: see
# examples/bench_floor.rs) and, when nginx is installed, nginx plain and
# with its mirror module. Prints each one's ratio to the direct connection;
# the share of cutover's comparisons shed during its saturation runs
# (skipped with reason queue_full, from its own metrics, per body size);
# the peak number of connections cutover's own process (told apart by pid
# from the floor's and nginx's) held to the shadow during a load at
# saturation, next to [mirror] max_in_flight which bounds it; and cutover's
# outcome counts.
#
# Needs wrk (apt-get install wrk) and oha (cargo install oha).
# Everything runs on loopback and stops by itself.
#
# Usage: scripts/bench-proxy.sh [SECONDS_PER_RUN] [FIXED_RATE] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-config.sh

SECONDS_PER_RUN=${1:-8}
RATE=${2:-2000}
ROUNDS=${3:-2}
CONNECTIONS=${CONNECTIONS:-32}
PRIMARY_PORT=18081
SHADOW_PORT=18082
PROXY_PORT=18080
ADMIN_PORT=18990
FLOOR_MIRROR_PORT=18061
FLOOR_PLAIN_PORT=18062
NGINX_MIRROR_PORT=18071
NGINX_PLAIN_PORT=18072

bench_require bench-proxy "wrk: apt-get install wrk; oha: cargo install oha" wrk oha

bench_start $PRIMARY_PORT $SHADOW_PORT
declare -A pid_of=()
target/release/examples/bench_floor --listen 127.0.0.1:$FLOOR_MIRROR_PORT --primary "http://127.0.0.1:$PRIMARY_PORT" \
    --shadow "http://127.0.0.1:$SHADOW_PORT" 2>/dev/null & pids+=($!); pid_of[floor-mirror]=$!
target/release/examples/bench_floor --listen 127.0.0.1:$FLOOR_PLAIN_PORT --primary "http://127.0.0.1:$PRIMARY_PORT" 2>/dev/null & pids+=($!); pid_of[floor-plain]=$!
if command -v nginx >/dev/null; then
    # One worker process: nginx's usual setting for a machine this size would be two.
    cat > "$work/nginx.conf" <<EOF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
daemon off;
events { worker_connections 1024; }
http {
    access_log off;
    upstream primary { server 127.0.0.1:$PRIMARY_PORT; keepalive 64; }
    upstream shadow { server 127.0.0.1:$SHADOW_PORT; keepalive 64; }
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    server {
        listen 127.0.0.1:$NGINX_PLAIN_PORT;
        location / { proxy_pass http://primary; }
    }
    server {
        listen 127.0.0.1:$NGINX_MIRROR_PORT;
        location / { mirror /mirror; proxy_pass http://primary; }
        location = /mirror { internal; proxy_pass http://shadow\$request_uri; }
    }
}
EOF
    nginx -c "$work/nginx.conf" -e "$work/nginx-error.log" 2>/dev/null & pids+=($!)
fi
bench_serve target/release/cutover $PROXY_PORT $ADMIN_PORT $PRIMARY_PORT $SHADOW_PORT
pid_of[cutover]=$served_pid

rps() { # URL -> requests/s at saturation
    wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" "$1" | awk '/Requests\/sec/ {print $2}'
}
cpu_ticks() { # PID -> its user + system clock ticks so far (0 without a PID)
    if [ -n "$1" ]; then awk '{print $14 + $15}' "/proc/$1/stat"; else echo 0; fi
}
percentiles() { # URL [PID] -> "p50_ms p99_ms cpu_us_per_request" at the fixed rate, latency-corrected
    local before after
    before=$(cpu_ticks "${2:-}")
    oha -z "${SECONDS_PER_RUN}s" -q "$RATE" -c "$CONNECTIONS" --latency-correction --no-tui --output-format json "$1" >"$work/oha.json"
    after=$(cpu_ticks "${2:-}")
    python3 - "$work/oha.json" "$((after - before))" "$(getconf CLK_TCK)" "${2:-}" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
ticks, hz, pid = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
requests = sum(d["statusCodeDistribution"].values())
cpu = ticks / hz * 1e6 / requests if pid and requests else float("nan")
print(d["latencyPercentiles"]["p50"] * 1000, d["latencyPercentiles"]["p99"] * 1000, cpu)
EOF
}
drained() { # waits (at most 60 s) until cutover has no mirrored exchange in flight
    for _ in $(seq 600); do
        depth=$(curl -sf "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '/^cutover_mirror_queue_depth / {print $2}')
        [ "${depth:-0}" = "0" ] && return
        sleep 0.1
    done
}
steady_percentiles() { # URL [PID]: latency at the fixed rate in steady state: queue drained, then a short unmeasured warm-up
    drained
    oha -z 2s -q "$RATE" -c "$CONNECTIONS" --no-tui "$1" >/dev/null
    percentiles "$@"
}
counter_sum() { # METRIC_PREFIX -> the sum of cutover's counters whose line starts so
    curl -sf "http://127.0.0.1:$ADMIN_PORT/metrics" | awk -v prefix="$1" 'index($0, prefix) == 1 {sum += $2} END {print sum + 0}'
}
mean() { python3 -c 'import sys; v=[float(x) for x in sys.argv[1:]]; print(sum(v)/len(v))' "$@"; }

# What is measured besides the direct connection and cutover: the floor of
# cutover's own stack (examples/bench_floor.rs: hyper and tokio forwarding
# and mirroring with nothing else), and nginx, plain and with its mirror
# module, when nginx is installed (the reference points of issue #2).
targets=(cutover floor-mirror floor-plain)
if command -v nginx >/dev/null; then
    targets+=(nginx-mirror nginx-plain)
fi
port_of() {
    case "$1" in
        direct) echo $PRIMARY_PORT ;; cutover) echo $PROXY_PORT ;;
        floor-mirror) echo $FLOOR_MIRROR_PORT ;; floor-plain) echo $FLOOR_PLAIN_PORT ;;
        nginx-mirror) echo $NGINX_MIRROR_PORT ;; nginx-plain) echo $NGINX_PLAIN_PORT ;;
    esac
}

declare -A shed_of=()
printf '%-6s %-13s %10s %7s | %9s %9s %8s | %8s\n' body via rps ratio p50ms p99ms p99_add cpu_us
for size in 1k 64k; do
    declare -A rps_of=() p50_of=() p99_of=() cpu_of=()
    for target in direct "${targets[@]}"; do
        curl -sf "http://127.0.0.1:$(port_of "$target")/json/$size" >/dev/null
    done
    for _ in $(seq "$ROUNDS"); do
        for target in direct "${targets[@]}"; do
            url="http://127.0.0.1:$(port_of "$target")/json/$size"
            if [ "$target" = cutover ]; then
                drained
                requests_before=$(counter_sum cutover_requests_total)
                shed_before=$(counter_sum 'cutover_mirror_dropped_total{reason="queue_full"}')
            fi
            rps_of[$target]+=" $(rps "$url")"
            if [ "$target" = cutover ]; then
                drained
                requests=$(( $(counter_sum cutover_requests_total) - requests_before ))
                shed=$(( $(counter_sum 'cutover_mirror_dropped_total{reason="queue_full"}') - shed_before ))
                shed_of[$size]+=" $(python3 -c "import sys; print(100 * $shed / max($requests, 1))")"
            fi
            read -r a b c <<<"$(steady_percentiles "$url" "${pid_of[$target]:-}")"
            p50_of[$target]+=" $a"; p99_of[$target]+=" $b"; cpu_of[$target]+=" $c"
        done
    done
    d_rps=$(mean ${rps_of[direct]}); d_p99=$(mean ${p99_of[direct]})
    for target in direct "${targets[@]}"; do
        python3 - "$size" "$target" "$(mean ${rps_of[$target]})" "$d_rps" "$(mean ${p50_of[$target]})" "$(mean ${p99_of[$target]})" "$d_p99" "$(mean ${cpu_of[$target]})" <<'EOF'
import sys
size, target = sys.argv[1:3]
rps, d_rps, p50, p99, d_p99, cpu = map(float, sys.argv[3:])
cpu = "-" if cpu != cpu else f"{cpu:.0f}"
print(f"{size:<6} {target:<13} {rps:10.0f} {rps/d_rps:6.2f}x | {p50:9.3f} {p99:9.3f} {p99-d_p99:+7.3f}ms | {cpu:>8}")
EOF
    done
    echo "$size: comparisons shed by cutover at saturation (queue_full): $(mean ${shed_of[$size]})% of requests"
    unset rps_of p50_of p99_of cpu_of
done

# Pooling: connections cutover's own process (not the floor's, nor nginx's)
# holds to the shadow while a short load at saturation runs, at their peak
# over ten samples; bounded by [mirror] max_in_flight.
wrk -t1 -c"$CONNECTIONS" -d4s "http://127.0.0.1:$PROXY_PORT/json/1k" >/dev/null &
load=$!
peak_conns=0
sleep 0.5
for _ in $(seq 10); do
    held=$(ss -Htnp state established "( dport = :$SHADOW_PORT )" | grep -c "pid=${pid_of[cutover]}," || true)
    [ "$held" -gt "$peak_conns" ] && peak_conns=$held
    sleep 0.3
done
wait $load
echo "connections from cutover to the shadow during load: peak $peak_conns, max_in_flight $BENCH_MAX_IN_FLIGHT (client connections: $CONNECTIONS)"

sleep 1
metrics=$(curl -sf "http://127.0.0.1:$ADMIN_PORT/metrics")
echo "cutover outcomes:"
grep -E '^cutover_requests_total' <<<"$metrics" | sed 's/^/  /'
grep -E '^cutover_mirror_dropped_total' <<<"$metrics" | grep -v ' 0$' | sed 's/^/  /' || echo "  nothing dropped"

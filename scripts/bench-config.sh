# Sourced by the bench scripts: how they start (the build, the two
# backends, the cleanup on exit) and the cutover config they measure, with
# mirroring and comparison on for every request.
# The bound on requests (and so connections) to each upstream from the mirror.
BENCH_MAX_IN_FLIGHT=${BENCH_MAX_IN_FLIGHT:-256}
# bench_config PROXY_PORT ADMIN_PORT PRIMARY_PORT SHADOW_PORT STORE_FILE
bench_config() {
    cat <<TOML
[listen]
proxy = "127.0.0.1:$1"
admin = "127.0.0.1:$2"

[primary]
name = "primary"
url = "http://127.0.0.1:$3"

[shadow]
name = "shadow"
url = "http://127.0.0.1:$4"

[store]
url = "sqlite://$5"

[mirror]
queue = 10000
max_in_flight = $BENCH_MAX_IN_FLIGHT
unmatched = "reads"

[[route]]
name = "json"
match = "GET /json/*"
mirror = "compare"
TOML
}

# bench_start PRIMARY_PORT SHADOW_PORT: builds what the bench scripts run,
# makes the scratch directory $work and starts the primary and shadow
# backends. Every pid in $pids is stopped on exit, and $work removed.
bench_start() {
    cargo build --release --quiet --bin cutover --example backend --example bench_floor
    work=$(mktemp -d)
    pids=()
    trap bench_cleanup EXIT
    target/release/examples/backend --listen "127.0.0.1:$1" --name bench 2>/dev/null & pids+=($!)
    target/release/examples/backend --listen "127.0.0.1:$2" --name bench 2>/dev/null & pids+=($!)
}

# bench_require SCRIPT HINT TOOL...: exits (status 2) naming the first TOOL
# not installed, with HINT saying how to install what SCRIPT needs.
bench_require() {
    local script=$1 hint=$2 tool
    shift 2
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "$script: needs $tool ($hint)" >&2; exit 2; }
    done
}

# bench_serve BIN PROXY_PORT ADMIN_PORT PRIMARY_PORT SHADOW_PORT: starts BIN
# (a cutover build) on the bench config, its store and log in $work named
# after PROXY_PORT; sets served_pid and waits until it answers /healthz.
bench_serve() {
    bench_config "$2" "$3" "$4" "$5" "$work/$2.db" >"$work/$2.toml"
    RUST_LOG=warn "$1" serve -c "$work/$2.toml" 2>"$work/$2.log" & pids+=($!)
    served_pid=$!
    for _ in $(seq 50); do curl -sf "http://127.0.0.1:$3/healthz" >/dev/null && return; sleep 0.1; done
    echo "bench: $1 did not start; its log:" >&2; cat "$work/$2.log" >&2; exit 1
}

bench_cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}

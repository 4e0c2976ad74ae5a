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

bench_cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}

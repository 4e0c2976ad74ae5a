# Sourced by the bench scripts: the cutover config they measure, with
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

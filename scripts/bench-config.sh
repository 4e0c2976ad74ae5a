# Sourced by the bench scripts: the cutover config they measure, with
# mirroring and comparison on for every request.
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
unmatched = "reads"

[[route]]
name = "json"
match = "GET /json/*"
mirror = "compare"
TOML
}

#!/usr/bin/env bash
# Where cutover's CPU goes, against the floor of its own stack: perf samples
# cutover and the floor (examples/bench_floor.rs, mirroring) in turn, under
# the same fixed-rate load, and prints the samples per 1,000 requests of
# each, grouped by where they land (the kernel, the allocator, memcpy, then
# by crate), with the difference, largest first.
#
# scripts/bench-instructions.sh counts instructions under valgrind, which
# is repeatable but replaces memcpy with a byte loop (so it overstates
# copies) and leaves out the kernel; this samples real CPU time, kernel
# included, at the rate issue #22 sets its aims at. Figures move with the
# machine (±20%), the split between groups much less.
#
# Needs perf (linux-perf) and oha (cargo install oha); perf must be allowed
# to sample a process of the same user (kernel.perf_event_paranoid ≤ 2).
#
# Usage: scripts/bench-profile.sh [SIZE (1k|64k)] [RATE] [SECONDS] [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-config.sh

SIZE=${1:-1k}
RATE=${2:-2000}
SECONDS_PER_RUN=${3:-6}
OUT=${4:-$(mktemp -d)}
PRIMARY_PORT=38081
SHADOW_PORT=38082
PROXY_PORT=38080
ADMIN_PORT=38990
FLOOR_PORT=38061

bench_require bench-profile "apt-get install linux-perf; cargo install oha" perf oha python3
mkdir -p "$OUT"
bench_start $PRIMARY_PORT $SHADOW_PORT
target/release/examples/bench_floor --listen 127.0.0.1:$FLOOR_PORT --primary "http://127.0.0.1:$PRIMARY_PORT" \
    --shadow "http://127.0.0.1:$SHADOW_PORT" 2>/dev/null & pids+=($!)
floor_pid=$!
bench_serve target/release/cutover $PROXY_PORT $ADMIN_PORT $PRIMARY_PORT $SHADOW_PORT
cutover_pid=$served_pid

# sample NAME PORT PID: warms up, then records PID while oha sends the load; prints the requests answered.
sample() {
    local url="http://127.0.0.1:$2/json/$SIZE"
    oha -z 3s -q "$RATE" -c 32 --no-tui "$url" >/dev/null
    perf record -F 2999 -g -p "$3" -o "$OUT/$1.data" -- sleep "$SECONDS_PER_RUN" >/dev/null 2>&1 &
    local recorder=$!
    oha -z "${SECONDS_PER_RUN}s" -q "$RATE" -c 32 --no-tui --output-format json "$url" >"$OUT/$1.oha.json"
    wait "$recorder" || true
    python3 -c 'import json, sys; print(sum(json.load(open(sys.argv[1]))["statusCodeDistribution"].values()))' "$OUT/$1.oha.json"
}
cutover_requests=$(sample cutover $PROXY_PORT $cutover_pid)
floor_requests=$(sample floor $FLOOR_PORT $floor_pid)

python3 - "$OUT" "$cutover_requests" "$floor_requests" <<'EOF_PY'
import collections, re, subprocess, sys
out, requests = sys.argv[1], {"cutover": int(sys.argv[2]), "floor": int(sys.argv[3])}

def group(dso, kind, symbol):
    if kind == "k":
        return "kernel"
    if "memcpy" in symbol or "memmove" in symbol:
        return "memcpy"
    if symbol.startswith(("_mi_", "mi_", "malloc", "free", "_int_malloc", "_int_free", "cfree", "realloc")):
        return "allocator"
    if "drop_in_place" in symbol:
        return "drops"
    if dso.startswith("libc"):
        return "libc (other)"
    return re.split(r"::|<| ", symbol.lstrip("<&"))[0] or symbol

def per_thousand(name):
    report = subprocess.run(
        ["perf", "report", "-i", f"{out}/{name}.data", "--no-children", "--sort", "dso,sym",
         "-q", "-g", "none", "-F", "sample,dso,sym"],
        capture_output=True, text=True, check=True).stdout
    samples = collections.Counter()
    for line in report.splitlines():
        found = re.match(r"\s*(\d+)\s+(\S+)\s+\[(.)\]\s+(.*)", line)
        if found:
            samples[group(found[2], found[3], found[4].strip())] += int(found[1])
    return {key: 1000 * count / max(requests[name], 1) for key, count in samples.items()}

cutover, floor = per_thousand("cutover"), per_thousand("floor")
print(f"samples per 1,000 requests ({requests['cutover']} through cutover, {requests['floor']} through the floor)")
print(f"{'':24} {'cutover':>9} {'floor':>9} {'diff':>9}")
print(f"{'total':24} {sum(cutover.values()):9.1f} {sum(floor.values()):9.1f} {sum(cutover.values()) - sum(floor.values()):+9.1f}")
for key in sorted(set(cutover) | set(floor), key=lambda key: floor.get(key, 0) - cutover.get(key, 0))[:25]:
    print(f"{key:24} {cutover.get(key, 0):9.1f} {floor.get(key, 0):9.1f} {cutover.get(key, 0) - floor.get(key, 0):+9.1f}")
print(f"profiles in {out} (perf report -i {out}/cutover.data)")
EOF_PY

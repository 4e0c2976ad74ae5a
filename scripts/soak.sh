#!/usr/bin/env bash
# Soak run (issue #10): the real cutover binary at a fixed rate on loopback,
# in front of a healthy primary and a shadow that misbehaves on a schedule
# (slow, down, errors, garbage, healthy), for a bounded time. Passes when
# every client got the primary's answer, resident memory at the end is
# within 10% of the memory after the first cycle, file descriptors did not
# grow, and the outcomes counted and stored equal the requests sent.
# See examples/soak.rs for what is measured and how.
#
# Usage: scripts/soak.sh [DURATION] [RATE] [IDLE]     (defaults: 30m 200 0)
#   IDLE connections are held open to the proxy sending nothing, and the
#   health checks must answer throughout.
#   SOAK_PROFILE=dev builds without optimizations (CI's 2-minute run reuses
#   the test build instead of compiling everything again for release).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${1:-30m}
RATE=${2:-200}
IDLE=${3:-0}
PROFILE=${SOAK_PROFILE:-release}
case "$PROFILE" in
  release) dir=release ;;
  dev) dir=debug ;;
  *) echo "soak: SOAK_PROFILE is release or dev, not $PROFILE" >&2; exit 2 ;;
esac

cargo build --quiet --profile "$PROFILE" --bin cutover --example soak
exec "target/$dir/examples/soak" --binary "target/$dir/cutover" --duration "$DURATION" --rate "$RATE" --idle "$IDLE"

#!/usr/bin/env bash
# RustSec advisories, against the live database when it can be fetched and
# otherwise against the snapshot in ../shared/advisory-db (its SNAPSHOT file
# says how cargo-deny reads it). Fails on any advisory not ignored in
# deny.toml with a reason, and says how old the database it used is.
set -euo pipefail
cd "$(dirname "$0")/.."

if cargo deny --log-level error fetch >/dev/null 2>&1; then
  echo "cargo deny: advisories checked against the live RustSec database"
  exec cargo deny --log-level error check advisories
fi

snapshot="${CUTOVER_ADVISORY_SNAPSHOT:-../shared/advisory-db}"
if [ ! -f "$snapshot/SNAPSHOT" ]; then
  echo "cargo deny: the RustSec database cannot be fetched and there is no snapshot at $snapshot" >&2
  exit 1
fi
committed=$(grep -oE '[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}[+-][0-9]{2}:[0-9]{2}' "$snapshot/SNAPSHOT" | head -n 1)
age_days=$(( ( $(date +%s) - $(date -d "$committed" +%s) ) / 86400 ))
echo "cargo deny: the live RustSec database cannot be fetched; checking against the snapshot of $committed ($age_days days old)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The folder name cargo-deny derives from the default database URL.
db="$work/advisory-dbs/advisory-db-3157b0e258782691"
mkdir -p "$db"
cp -r "$snapshot/." "$db"
chmod -R u+w "$db"
git -C "$db" init -q
git -C "$db" add -A
GIT_COMMITTER_DATE="$committed" git -C "$db" -c user.name=snapshot -c user.email=snapshot@localhost \
  commit -q -m snapshot --date="$committed"
sed "s|^\[advisories\]|[advisories]\ndb-path = \"$work/advisory-dbs\"|" deny.toml >"$work/deny.toml"
cargo fetch --quiet
cargo deny --log-level error --offline --config "$work/deny.toml" check advisories

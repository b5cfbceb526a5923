#!/usr/bin/env bash
# kill -9 at every step, long: the fault loops of tests/faults.rs (import as root and as a
# user, start of a veth machine, stop, rm, commit; the CLI, supervisor, registrar,
# spawner, PID 1 or image worker killed after a seeded delay, then the checker) with
# KILLS rounds per operation (default 90: 540 in all). Prints each operation's table
# (kills and violations per process killed and phase) and the seeds; SEED=N replays a run.
#
# Needs root (the tests skip otherwise). Output is also kept in target/faults.log.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/faults.sh needs root" >&2; exit 1; }
[ -e images/busybox/index.json ] || ./scripts/build-busybox-image >/dev/null
export MM_FAULTS_KILLS=${KILLS:-90}
[ -n "${SEED:-}" ] && export MM_FAULTS_SEED=$SEED
log=target/faults.log
started=$(date +%s)
status=0
cargo test -q --locked --test faults -- --nocapture --test-threads=6 >"$log" 2>&1 || status=$?
elapsed=$(($(date +%s) - started))
grep '^faults: seed' "$log" || true
# Each test's table: from its name line to its total.
awk '/^faults: [a-z_]+_killed_at_every_step$/ {show=1} show {print} /^total / {show=0}' "$log"
grep -c '^faults: VIOLATION' "$log" | sed 's/^/violations: /' || true
awk '/^total / {kills += $(NF-1)} END {print "kills: " kills}' "$log"
echo "seconds: $elapsed (KILLS=$MM_FAULTS_KILLS per operation; log: $log)"
exit "$status"

#!/usr/bin/env bash
# kill -9 at every step, long: the fault loops of tests/faults.rs (import as root and as a
# user, start of a veth machine and of a booted one, stop, rm, commit; the CLI,
# supervisor, registrar, spawner, PID 1 or image worker killed after a seeded delay,
# then the checker) with KILLS rounds per loop (default 100: 700 rounds, 550 to 650 of
# them kills; a round whose target ended before its delay kills nothing and says so).
# Prints each loop's table (kills and violations per process killed and phase) and the
# seeds; SEED=N replays a run.
#
# Needs root (the tests skip otherwise). Output is also kept in target/faults.log.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/faults.sh needs root" >&2; exit 1; }
[ -e images/busybox/index.json ] || ./scripts/build-busybox-image >/dev/null
export MM_FAULTS_KILLS=${KILLS:-100}
[ -n "${SEED:-}" ] && export MM_FAULTS_SEED=$SEED
log=target/faults.log
started=$(date +%s)
status=0
# Not -q: its progress dots would glue themselves to the tables' lines.
cargo test --locked --test faults -- --nocapture --test-threads=6 >"$log" 2>&1 || status=$?
elapsed=$(($(date +%s) - started))
grep -o 'faults: seed.*' "$log" || true
# Each test's table: from its name line to its total.
awk '/faults: [a-z_]+_killed_at_every_step$/ {show=1} show {print} /^total / {show=0}' "$log"
awk '/^total / {n += $NF} END {print "violations: " n}' "$log"
awk '/^total / {kills += $(NF-1)} END {print "kills: " kills}' "$log"
echo "seconds: $elapsed (KILLS=$MM_FAULTS_KILLS per operation; log: $log)"
exit "$status"

#!/usr/bin/env bash
# What `mm exec` costs now that a machine never gets the caller's descriptors: its command
# gets pipes (or, from a terminal, a pty of the machine's own), which mm relays. Beside it,
# `nsenter -t PID -a`, which hands the caller's descriptors straight in. One hyperfine run:
#   - /bin/true with output to /dev/null (pipes relayed),
#   - /bin/true under a terminal (`script`: the machine's pty, relayed; script's own cost
#     is in both),
#   - 256 MiB through standard output (the relay's throughput).
# Prints medians and mm/nsenter ratios. Needs root. RUNS=N (default 40). MM_BEFORE=PATH
# adds an older mm binary's `mm exec` (which passed the caller's descriptors straight in),
# to show what the relay costs.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/exec.sh needs root" >&2; exit 1; }
command -v hyperfine >/dev/null || apt-get install -y -q hyperfine >/dev/null
cargo build -q --release
[ -e images/busybox/index.json ] || ./scripts/build-busybox-image >/dev/null
mm=$PWD/target/release/mm
runs=${RUNS:-40}

work=$(mktemp -d /var/tmp/mm-bench.XXXXXX)
chmod 755 "$work"
export MM_ROOT=$work/state MM_PATH=$work/machines
mkdir -p "$work/machines"
cat >"$work/machines/bench-exec.toml" <<EOF2
[image]
source = "oci:$PWD/images/busybox:latest"
[exec]
command = ["/bin/sleep", "3600"]
EOF2
cp "$work/machines/bench-exec.toml" "$work/machines/bench-before.toml"
cleanup() {
    "$mm" stop bench-exec --timeout 1 >/dev/null 2>&1 || true
    [ -z "${MM_BEFORE:-}" ] || "$MM_BEFORE" stop bench-before --timeout 1 >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
"$mm" start bench-exec --no-systemd >/dev/null 2>&1
leader=$("$mm" status bench-exec --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader"])')

big=268435456
before=()
if [ -n "${MM_BEFORE:-}" ]; then
    # Its own machine: an older mm does not read this one's state.
    "$MM_BEFORE" start bench-before --no-systemd >/dev/null 2>&1
    before=(-n "mm exec before, pipes" "$MM_BEFORE exec bench-before -- /bin/true"
        -n "mm exec before, 256 MiB out" "$MM_BEFORE exec bench-before -- head -c $big /dev/zero")
fi
hyperfine -N --warmup 5 --runs "$runs" --export-json "$work/exec.json" "${before[@]}" \
    -n "mm exec, pipes" "$mm exec bench-exec -- /bin/true" \
    -n "nsenter, pipes" "nsenter -t $leader -a /bin/true" \
    -n "mm exec, terminal" "script -qec '$mm exec bench-exec -- /bin/true' /dev/null" \
    -n "nsenter, terminal" "script -qec 'nsenter -t $leader -a /bin/true' /dev/null" \
    -n "mm exec, 256 MiB out" "$mm exec bench-exec -- head -c $big /dev/zero" \
    -n "nsenter, 256 MiB out" "nsenter -t $leader -a head -c $big /dev/zero" \
    >/dev/null
python3 - "$work/exec.json" <<'PY'
import json, sys
results = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
median = {name: r["median"] * 1000 for name, r in results.items()}
print(f"{'':24} {'median':>10}")
for name, ms in median.items():
    print(f"{name:24} {ms:8.2f} ms")
for case in ["pipes", "terminal", "256 MiB out"]:
    if f"mm exec before, {case}" in median:
        print(f"mm exec now / before, {case}: "
              f"{median[f'mm exec, {case}'] / median[f'mm exec before, {case}']:.2f}")
    ours, theirs = median[f"mm exec, {case}"], median[f"nsenter, {case}"]
    print(f"mm exec / nsenter, {case}: {ours / theirs:.2f}")
mib_s = lambda ms: 256 / (ms / 1000)
print(f"throughput: mm exec {mib_s(median['mm exec, 256 MiB out']):.0f} MiB/s, "
      f"nsenter {mib_s(median['nsenter, 256 MiB out']):.0f} MiB/s")
PY

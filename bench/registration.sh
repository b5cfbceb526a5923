#!/usr/bin/env bash
# What registering with systemd-machined costs a start: `mm run` of /bin/true with
# machined reachable and with no system bus, beside `systemd-nspawn --keep-unit` with
# --register=yes and --register=no, interleaved in one hyperfine run. Prints medians,
# each tool's registration cost, and the ratio of the registered starts.
#
# Needs root. Starts the system bus and systemd-machined when they are not running (as the
# tests do). nspawn registers the cgroup it runs in, which machined wants unit-shaped:
# this script runs in machine.slice/mm-bench-registration.scope. RUNS=N (default 30).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/registration.sh needs root" >&2; exit 1; }
command -v hyperfine >/dev/null || apt-get install -y -q hyperfine >/dev/null
command -v systemd-nspawn >/dev/null || apt-get install -y -q systemd-container >/dev/null
cargo build -q --release
[ -e images/busybox/index.json ] || ./scripts/build-busybox-image >/dev/null
mm=$PWD/target/release/mm

if ! busctl --system status >/dev/null 2>&1; then
    mkdir -p /run/dbus && rm -f /run/dbus/pid /run/dbus/system_bus_socket
    dbus-daemon --system --fork
fi
if ! busctl --system status org.freedesktop.machine1 >/dev/null 2>&1; then
    /lib/systemd/systemd-machined </dev/null >/dev/null 2>&1 &
    for _ in $(seq 50); do
        busctl --system status org.freedesktop.machine1 >/dev/null 2>&1 && break
        sleep 0.1
    done
fi

scope=machine.slice/mm-bench-registration.scope
for tree in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified /sys/fs/cgroup; do
    [ -e "$tree/cgroup.procs" ] || continue
    mkdir -p "$tree/$scope" && echo $$ >"$tree/$scope/cgroup.procs"
done

work=$(mktemp -d /var/tmp/mm-bench.XXXXXX)
chmod 755 "$work"
export MM_ROOT=$work/state MM_PATH=$work/machines
cleanup() {
    for tree in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified /sys/fs/cgroup; do
        [ -d "$tree/$scope" ] || continue
        echo $$ >"$tree/cgroup.procs" 2>/dev/null || true
        rmdir "$tree/$scope" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

rootfs=$work/rootfs
"$mm" image extract "oci:$PWD/images/busybox:latest" "$rootfs" >/dev/null
mkdir -p "$rootfs/usr" "$work/machines"
cat >"$work/machines/bench-reg.toml" <<EOF
[image]
source = "oci:$PWD/images/busybox:latest"
[exec]
command = ["/bin/true"]
EOF
"$mm" run bench-reg </dev/null
# Registration works here, or the comparison means nothing.
"$mm" run bench-reg </dev/null 2>&1 | grep -q "not registered" &&
    { echo "mm could not register with machined here" >&2; exit 1; }

nobus="unix:path=$work/no-bus"
hyperfine -N --warmup 3 --runs "${RUNS:-30}" --export-json "$work/times.json" \
    -n mm-registered "$mm run bench-reg" \
    -n mm-unregistered "env DBUS_SYSTEM_BUS_ADDRESS=$nobus $mm run bench-reg" \
    -n nspawn-registered "systemd-nspawn -q --register=yes --keep-unit -M bench-nspawn -D $rootfs /bin/true" \
    -n nspawn-unregistered "systemd-nspawn -q --register=no --keep-unit -D $rootfs /bin/true" \
    -n env "env DBUS_SYSTEM_BUS_ADDRESS=$nobus true" \
    >/dev/null
python3 - "$work/times.json" <<'EOF'
import json, statistics, sys
runs = {r["command"]: statistics.median(r["times"]) * 1000 for r in json.load(open(sys.argv[1]))["results"]}
for name, ms in runs.items():
    print(f"{name:20} {ms:7.1f} ms")
# `env` starts one more process for the unregistered mm: take it off.
mm_cost = runs["mm-registered"] - (runs["mm-unregistered"] - runs["env"])
nspawn_cost = runs["nspawn-registered"] - runs["nspawn-unregistered"]
print(f"registration costs mm {mm_cost:.1f} ms, nspawn {nspawn_cost:.1f} ms (within noise when near 0)")
print(f"a registered start: mm/nspawn {runs['mm-registered'] / runs['nspawn-registered']:.2f}")
EOF

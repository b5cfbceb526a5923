#!/usr/bin/env bash
# Many machines at once: COUNT (default 100) busybox machines of one zone, each with
# `memory = "32M"` and `pids = 64`, started at the same moment with `mm start`, beside the
# same count of `systemd-nspawn --keep-unit` backgrounded at once on the busybox rootfs
# (`--volatile=overlay`, so that they share it as mm's machines share the image;
# `--network-zone=bmn`; each in a scope of its own with the same limits written into its
# cgroup, and registered with machined, as mm's are). In one run, in a network namespace
# the script makes (standing in for the host):
#
#   1. time to all up: from launching every start until each machine's PID 1 (`/bin/sleep
#      N`, one N per tool) runs, for mm and for nspawn, and for mm until every `mm start`
#      has returned;
#   2. all registered (machined's ListMachines), each of mm's machines reaching its
#      neighbour by name (`ping` of the next machine's name: the zone's hosts file);
#   3. memory: the PSS and RSS sums of mm's supervisors and mm's init, beside nspawn's
#      (the `systemd-nspawn` processes; their PID 1 is the payload itself);
#   4. all stopped at once (`mm stop`; SIGTERM to each nspawn), timed, and what was left.
#
# nspawn gets no addresses (networkd does that for it, and is not running here): it makes
# the links and the bridge only, where mm also gives addresses, routes, NAT and the hosts
# file. Needs root; installs systemd-container and dbus when missing; starts the system bus
# and systemd-machined when they are not running (as the tests do). COUNT=N; BUILD=debug
# for the debug build.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/many.sh needs root" >&2; exit 1; }
command -v systemd-nspawn >/dev/null || apt-get install -y -q systemd-container >/dev/null
command -v dbus-daemon >/dev/null || apt-get install -y -q dbus >/dev/null
count=${COUNT:-100}
[ "$count" -le 253 ] || { echo "COUNT=$count: a zone's /24 holds 253 machines" >&2; exit 1; }
# BUILD=debug: the debug build (when a release build is not to be had in time).
if [ "${BUILD:-release}" = debug ]; then
    cargo build -q
    mm=$PWD/target/debug/mm
else
    cargo build -q --release
    mm=$PWD/target/release/mm
fi
[ -e images/busybox/index.json ] || ./scripts/build-busybox-image >/dev/null

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

work=$(mktemp -d /var/tmp/mm-bench-many.XXXXXX)
chmod 755 "$work"
ns=mmbench-many-$$
export MM_ROOT=$work/state MM_PATH=$work/machines
in_ns=(nsenter "--net=/run/netns/$ns")
names=()
for i in $(seq 1 "$count"); do names+=("$(printf 'bm-%03d' "$i")"); done
nspawn_pids=()
trees=()
for tree in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
    [ -e "$tree/cgroup.procs" ] && trees+=("${tree%/}")
done

cleanup() {
    set +e
    for pid in "${nspawn_pids[@]}"; do kill "$pid" 2>/dev/null; done
    for name in "${names[@]}"; do
        timeout 20 "${in_ns[@]}" "$mm" stop "$name" --timeout 1 >/dev/null 2>&1 &
    done
    wait 2>/dev/null
    for i in $(seq 1 "$count"); do
        for tree in "${trees[@]}"; do rmdir "$tree/machine.slice/bench-many-$i.scope" 2>/dev/null; done
    done
    ip netns del "$ns" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$ns"
ip -n "$ns" link set lo up

# The same image for both: in mm's store, and unpacked for nspawn.
"${in_ns[@]}" "$mm" image import "oci:$PWD/images/busybox:latest" >/dev/null
rootfs=$work/rootfs
"$mm" image extract "oci:$PWD/images/busybox:latest" "$rootfs" >/dev/null
mkdir -p "$rootfs/usr" "$work/machines" # systemd-nspawn refuses a tree without /usr
for name in "${names[@]}"; do
    cat >"$work/machines/$name.toml" <<EOF
[image]
source = "oci:$PWD/images/busybox:latest"
[exec]
command = ["/bin/sleep", "1000042"]
[network]
zone = "bmm"
[resources]
memory = "32M"
pids = 64
EOF
done

# running ARG: how many processes run `/bin/sleep ARG` (each machine's command).
running() {
    python3 - "$1" <<'PY'
import os, sys
want = ["/bin/sleep", sys.argv[1]]
n = 0
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            n += f.read().split(b"\0")[:-1] == [w.encode() for w in want]
    except OSError:
        pass
print(n)
PY
}
# wait_up ARG: until COUNT machines run `/bin/sleep ARG` (300 s at most).
wait_up() {
    local end=$((SECONDS + 300))
    until [ "$(running "$1")" -ge "$count" ]; do
        [ "$SECONDS" -lt "$end" ] || {
            echo "only $(running "$1") of $count came up" >&2
            cat "$work"/*.start "$work"/nspawn-*.log 2>/dev/null | sort | uniq -c | head >&2
            return 1
        }
        sleep 0.05
    done
}
now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$2"; }
pss_rss() { # PID...: the sums of Pss and Rss (kB) of /proc/PID/smaps_rollup
    local pss=0 rss=0 p v
    for p in "$@"; do
        v=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)
        pss=$((pss + ${v:-0}))
        v=$(awk '/^Rss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)
        rss=$((rss + ${v:-0}))
    done
    echo "$pss $rss"
}
registered() { # how many of machined's machines start with $1
    busctl --system --json=short call org.freedesktop.machine1 /org/freedesktop/machine1 \
        org.freedesktop.machine1.Manager ListMachines |
        python3 -c "import json, sys; print(sum(1 for m in json.load(sys.stdin)['data'][0] if m[0].startswith(sys.argv[1])))" "$1"
}

echo "== $count machines, $(nproc) CPUs, kernel $(uname -r)"

# mm: every start at once.
t0=$(now)
for name in "${names[@]}"; do
    "${in_ns[@]}" "$mm" start "$name" --no-systemd >"$work/$name.start" 2>&1 </dev/null &
done
wait_up 1000042
t_up=$(now)
failed=0
for job in $(jobs -p); do wait "$job" || failed=$((failed + 1)); done
t_returned=$(now)
mm_up=$(elapsed "$t0" "$t_up")
echo "mm: all $count PID 1 running in $mm_up s; every mm start returned in $(elapsed "$t0" "$t_returned") s; $failed failed"
[ "$failed" = 0 ] || { grep -h "error" "$work"/*.start | sort | uniq -c | head >&2; exit 1; }
echo "mm: $(registered bm-) of $count registered with systemd-machined"
unreachable=0
for i in $(seq 0 $((count - 1))); do
    from=${names[$i]} to=${names[$(((i + 1) % count))]}
    "${in_ns[@]}" "$mm" exec "$from" -- ping -c 1 -W 5 "$to" >/dev/null 2>&1 || {
        unreachable=$((unreachable + 1))
        echo "  $from cannot reach $to by name" >&2
    }
done
echo "mm: $((count - unreachable)) of $count reached their neighbour by name"
sups=() inits=()
for name in "${names[@]}"; do
    json=$("$mm" status "$name" --json)
    sups+=("$(echo "$json" | python3 -c 'import json, sys; print(json.load(sys.stdin)["supervisor"])')")
    inits+=("$(echo "$json" | python3 -c 'import json, sys; print(json.load(sys.stdin)["leader"])')")
done
read -r sup_pss sup_rss < <(pss_rss "${sups[@]}")
read -r init_pss init_rss < <(pss_rss "${inits[@]}")

# nspawn: the same count at once, each in a scope of its own with the same limits.
t0=$(now)
for i in $(seq 1 "$count"); do
    scope=machine.slice/bench-many-$i.scope
    (
        for tree in "${trees[@]}"; do
            # cpuset refuses a process until the cgroup has CPUs: it stays in its parent's.
            mkdir -p "$tree/$scope"
            echo "$BASHPID" >"$tree/$scope/cgroup.procs" 2>/dev/null || true
        done
        [ -e /sys/fs/cgroup/memory/cgroup.procs ] && echo $((32 << 20)) >"/sys/fs/cgroup/memory/$scope/memory.limit_in_bytes"
        [ -e /sys/fs/cgroup/pids/cgroup.procs ] && echo 64 >"/sys/fs/cgroup/pids/$scope/pids.max"
        [ -e /sys/fs/cgroup/memory.max ] && echo $((32 << 20)) >"/sys/fs/cgroup/$scope/memory.max"
        [ -e /sys/fs/cgroup/pids.max ] && echo 64 >"/sys/fs/cgroup/$scope/pids.max"
        exec "${in_ns[@]}" systemd-nspawn -q --keep-unit --register=yes --volatile=overlay \
            -M "bn-$i" --network-zone=bmn -D "$rootfs" /bin/sleep 1000043
    ) </dev/null >"$work/nspawn-$i.log" 2>&1 &
    nspawn_pids+=($!)
done
wait_up 1000043
t_nup=$(now)
nspawn_up=$(elapsed "$t0" "$t_nup")
echo "nspawn: all $count PID 1 running in $nspawn_up s; $(registered bn-) of $count registered"
read -r nsp_pss nsp_rss < <(pss_rss "${nspawn_pids[@]}")

echo "memory (kB, sums over $count machines):"
echo "  mm supervisors   PSS $sup_pss  RSS $sup_rss  ($((sup_pss / count)) PSS each)"
echo "  mm init          PSS $init_pss  RSS $init_rss"
echo "  systemd-nspawn   PSS $nsp_pss  RSS $nsp_rss  ($((nsp_pss / count)) PSS each)"

# Stop them all at once.
t0=$(now)
pids=()
for name in "${names[@]}"; do
    "${in_ns[@]}" "$mm" stop "$name" --timeout 5 >/dev/null 2>"$work/$name.stop" </dev/null &
    pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=$((failed + 1)); done
echo "mm: all $count stopped in $(elapsed "$t0" "$(now)") s; $failed failed; left: $(running 1000042) PID 1, $(registered bm-) registered, $(ip -n "$ns" -o link | grep -cE ' (vb-bm-|vz-bmm)' || true) links, $(grep -c "$work" /proc/self/mountinfo || true) mounts"
t0=$(now)
for pid in "${nspawn_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
for pid in "${nspawn_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
echo "nspawn: all $count stopped in $(elapsed "$t0" "$(now)") s; left: $(running 1000043) PID 1, $(registered bn-) registered"
nspawn_pids=()
python3 -c "import sys; m, n = float(sys.argv[1]), float(sys.argv[2]); print(f'all up: mm {m:.2f} s, nspawn {n:.2f} s, mm / nspawn = {m / n:.2f}')" "$mm_up" "$nspawn_up"
python3 -c "import sys; m, n = int(sys.argv[1]), int(sys.argv[2]); print(f'supervisor PSS: mm {m} kB, nspawn {n} kB, mm / nspawn = {m / n:.2f}')" "$sup_pss" "$nsp_pss"

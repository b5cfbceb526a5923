#!/bin/bash
# containerd's `ctr run --rm IMAGE ID true` with mm as the runc binary (through
# containerd-shim-runc-v2), against runc, interleaved round by round in one containerd
# of this script's own (root, state and socket in a temporary directory, no CRI plugin);
# the median and fastest of each in ms, and mm's median over runc's.
# Usage: bench/oci-containerd.sh [ROUNDS] (as root; MM=path to mm, default target/release/mm).
set -euo pipefail
rounds=${1:-20}
here=$(cd "$(dirname "$0")/.." && pwd)
mm=${MM:-$here/target/release/mm}
work=$(mktemp -d /tmp/mm-bench-ctrd.XXXXXX)
ns=mmbench$$
cleanup() {
    [ -n "${daemon:-}" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
    for d in /sys/fs/cgroup/*/"$ns" /sys/fs/cgroup/"$ns"; do [ -d "$d" ] && rmdir "$d" 2>/dev/null; done
    rm -rf "$work"
    true
}
trap cleanup EXIT
ln -s "$mm" "$work/mm-runc"
cat >"$work/config.toml" <<TOML
version = 2
root = "$work/root"
state = "$work/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$work/sock"
[ttrpc]
  address = "$work/sock.ttrpc"
TOML
containerd --config "$work/config.toml" >"$work/containerd.log" 2>&1 &
daemon=$!
ctr() { command ctr --address "$work/sock" --namespace "$ns" "$@"; }
for _ in $(seq 100); do ctr version >/dev/null 2>&1 && break; sleep 0.1; done
skopeo copy -q "oci:$here/images/busybox:latest" "docker-archive:$work/busybox.tar:mm.bench/busybox:latest"
ctr image import "$work/busybox.tar" >/dev/null
image=mm.bench/busybox:latest
declare -A binary=([mm]="$work/mm-runc" [runc]="$(command -v runc)")
for i in $(seq "$rounds"); do
    for rt in mm runc; do
        start=$(date +%s%N)
        ctr run --rm --runc-binary "${binary[$rt]}" "$image" "$rt-$i" true </dev/null >/dev/null
        end=$(date +%s%N)
        echo "$rt $(( (end - start) / 1000 ))" >>"$work/times"
    done
done
echo "ctr run --rm busybox true  median ms  min ms  (${rounds} rounds, interleaved; load: $(cut -d' ' -f1 /proc/loadavg))"
median() { awk -v rt="$1" '$1 == rt { print $2 }' "$work/times" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
for rt in mm runc; do
    awk -v rt="$rt" '$1 == rt { print $2 }' "$work/times" | sort -n | awk -v rt="$rt" '
        { v[NR] = $1 } END { printf "%-6s %9.1f %7.1f\n", rt, v[int((NR + 1) / 2)] / 1000, v[1] / 1000 }'
done
awk -v a="$(median mm)" -v b="$(median runc)" 'BEGIN { printf "mm / runc (median): %.2fx\n", a / b }'

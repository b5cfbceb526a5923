#!/bin/bash
# The bare OCI cycle (create + start + the process's exit + delete, as `RUNTIME run`
# does it) of one busybox bundle running `true`, for mm, runc and crun, interleaved round
# by round so that the machine's load is shared; the median of each in ms. A runtime that
# cannot run the bundle here (crun on a hybrid cgroup host) is reported and left out.
# Usage: bench/oci.sh [ROUNDS] (as root; MM=path to mm, default target/release/mm).
set -euo pipefail
rounds=${1:-20}
here=$(cd "$(dirname "$0")/.." && pwd)
mm=${MM:-$here/target/release/mm}
work=$(mktemp -d /tmp/mm-bench-oci.XXXXXX)
trap 'rm -rf "$work"' EXIT
umoci unpack --image "$here/images/busybox:latest" "$work/bundle" >/dev/null
python3 - "$work/bundle/config.json" <<'PY'
import json, sys
path = sys.argv[1]
config = json.load(open(path))
config["process"]["terminal"] = False
config["process"]["args"] = ["true"]
json.dump(config, open(path, "w"), indent=1)
PY
declare -A cmd=([mm]="$mm oci" [runc]="runc" [crun]="crun")
runtimes=()
for rt in mm runc crun; do
    if (cd "$work/bundle" && ${cmd[$rt]} --root "$work/$rt" run "probe-$rt" </dev/null >/dev/null 2>"$work/$rt.err"); then
        runtimes+=("$rt")
    else
        echo "$rt: cannot run the bundle here: $(head -c 200 "$work/$rt.err")"
    fi
done
for i in $(seq "$rounds"); do
    for rt in "${runtimes[@]}"; do
        start=$(date +%s%N)
        (cd "$work/bundle" && ${cmd[$rt]} --root "$work/$rt" run "c$i" </dev/null >/dev/null)
        end=$(date +%s%N)
        echo "$rt $(( (end - start) / 1000 ))" >>"$work/times"
    done
done
echo "runtime  median ms  min ms  (${rounds} rounds, interleaved; load: $(cut -d' ' -f1 /proc/loadavg))"
for rt in "${runtimes[@]}"; do
    awk -v rt="$rt" '$1 == rt { print $2 }' "$work/times" | sort -n | awk -v rt="$rt" '
        { v[NR] = $1 } END { printf "%-8s %9.1f %7.1f\n", rt, v[int((NR + 1) / 2)] / 1000, v[1] / 1000 }'
done

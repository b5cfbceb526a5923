#!/bin/bash
# The bare OCI cycle (create + start + the process's exit + delete, as `RUNTIME run`
# does it) of one busybox bundle running `true`, for mm, runc and crun, interleaved round
# by round so that the machine's load is shared; the median of each in ms. A runtime that
# cannot run the bundle here (crun on a hybrid cgroup host) is reported and left out.
# Then `RUNTIME exec ID true` into a running container of each runtime, and `podman exec`
# through conmon with each as podman's runtime (podman's own store in a temporary
# directory, the options docs/oci.md lists for this VM), interleaved the same way, with
# mm's median over runc's.
# Usage: bench/oci.sh [ROUNDS] (as root; MM=path to mm, default target/release/mm;
# PODMAN=0 leaves podman out).
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
# The median and fastest of each runtime in file $1, in ms, and mm's median over runc's.
report() {
    echo "$2: runtime  median ms  min ms  (${rounds} rounds, interleaved; load: $(cut -d' ' -f1 /proc/loadavg))"
    for rt in "${runtimes[@]}"; do
        awk -v rt="$rt" '$1 == rt { print $2 }' "$1" | sort -n | awk -v rt="$rt" '
            { v[NR] = $1 } END { printf "  %-8s %9.1f %7.1f\n", rt, v[int((NR + 1) / 2)] / 1000, v[1] / 1000 }'
    done
    median() { awk -v rt="$1" '$1 == rt { print $2 }' "$2" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
    local mm_median runc_median
    mm_median=$(median mm "$1")
    runc_median=$(median runc "$1")
    if [ -n "$mm_median" ] && [ -n "$runc_median" ]; then
        awk -v a="$mm_median" -v b="$runc_median" 'BEGIN { printf "  mm / runc: %.2fx\n", a / b }'
    fi
}
report "$work/times" "create+start+delete"

# exec: one running container per runtime, `RUNTIME exec ID true` in turn.
python3 - "$work/bundle/config.json" <<'PY'
import json, sys
path = sys.argv[1]
config = json.load(open(path))
config["process"]["args"] = ["sleep", "1000"]
json.dump(config, open(path, "w"), indent=1)
PY
for rt in "${runtimes[@]}"; do
    (cd "$work/bundle" && ${cmd[$rt]} --root "$work/$rt" run --detach "long-$rt" </dev/null >/dev/null 2>&1)
done
cleanup_long() {
    for rt in "${runtimes[@]}"; do
        ${cmd[$rt]} --root "$work/$rt" delete --force "long-$rt" >/dev/null 2>&1 || true
    done
}
trap 'cleanup_long; rm -rf "$work"' EXIT
for i in $(seq "$rounds"); do
    for rt in "${runtimes[@]}"; do
        start=$(date +%s%N)
        ${cmd[$rt]} --root "$work/$rt" exec "long-$rt" true </dev/null >/dev/null
        end=$(date +%s%N)
        echo "$rt $(( (end - start) / 1000 ))" >>"$work/exec-times"
    done
done
report "$work/exec-times" "RUNTIME exec ID true"

# podman exec, through conmon, with each runtime as podman's.
if [ "${PODMAN:-1}" = 1 ] && command -v podman >/dev/null; then
    ln -s "$mm" "$work/mm-runc"
    printf '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n' >"$work/containers.conf"
    declare -A runtime_path=([mm]="$work/mm-runc" [runc]="$(command -v runc)" [crun]="$(command -v crun)")
    pm() {
        local rt=$1
        shift
        CONTAINERS_CONF="$work/containers.conf" podman --root "$work/storage" --runroot "$work/run" \
            --storage-driver vfs --runtime "${runtime_path[$rt]}" "$@"
    }
    image="oci:$here/images/busybox:latest"
    pm runc pull -q "$image" >/dev/null
    podman_runtimes=()
    for rt in "${runtimes[@]}"; do
        if pm "$rt" run -d --name "pm-$rt" --security-opt seccomp=unconfined --network none \
            --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 "$image" sleep 1000 >/dev/null 2>"$work/pm-$rt.err"; then
            podman_runtimes+=("$rt")
        else
            echo "podman with $rt: cannot run here: $(head -c 200 "$work/pm-$rt.err")"
        fi
    done
    trap 'for rt in "${podman_runtimes[@]}"; do pm "$rt" rm -f "pm-$rt" >/dev/null 2>&1; done; cleanup_long; rm -rf "$work"' EXIT
    for i in $(seq "$rounds"); do
        for rt in "${podman_runtimes[@]}"; do
            start=$(date +%s%N)
            pm "$rt" exec "pm-$rt" true </dev/null >/dev/null
            end=$(date +%s%N)
            echo "$rt $(( (end - start) / 1000 ))" >>"$work/podman-times"
        done
    done
    runtimes=("${podman_runtimes[@]}")
    report "$work/podman-times" "podman exec CTR true"
fi

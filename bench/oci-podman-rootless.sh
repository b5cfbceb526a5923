#!/bin/bash
# Rootless podman with mm as its runtime, beside runc: `podman run --rm busybox true` and
# `podman exec CTR true`, as the ordinary user mmbench-oci (created here, removed at the
# end, with its own podman store), each runtime in turn round by round so that the load
# is shared; the median and fastest of each in ms, and mm's median over runc's. crun is
# tried and left out, with its reason, where it cannot run (it refuses hybrid cgroups).
# Usage: bench/oci-podman-rootless.sh [ROUNDS] (as root; MM=path to mm, default
# target/release/mm).
set -euo pipefail
rounds=${1:-20}
here=$(cd "$(dirname "$0")/.." && pwd)
mm=${MM:-$here/target/release/mm}
user=mmbench-oci
work=$(mktemp -d /var/tmp/mm-bench-oci-podman.XXXXXX)
chmod 755 "$work"
id "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$user"
home=$(getent passwd "$user" | cut -d: -f6)
uid=$(id -u "$user")
grep -q "^$user:" /etc/subuid || usermod --add-subuids 700000-765535 --add-subgids 700000-765535 "$user"
mkdir -p "$work/run" "$work/bin"
cp "$mm" "$work/bin/mm"
ln -s mm "$work/bin/mm-runc"
printf '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n' >"$work/containers.conf"
chown -R "$user": "$work/run"
chmod 700 "$work/run"
as_user=(setpriv --reuid "$user" --regid "$(id -g "$user")" --init-groups --
    env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$home" USER="$user" LOGNAME="$user"
    XDG_RUNTIME_DIR="$work/run")
declare -A runtime_path=([mm]="$work/bin/mm-runc" [runc]="$(command -v runc)" [crun]="$(command -v crun || echo /usr/bin/crun)")
pm() {
    local rt=$1
    shift
    (cd /tmp && "${as_user[@]}" podman --runtime "${runtime_path[$rt]}" "$@")
}
cleanup() {
    for rt in mm runc crun; do pm "$rt" rm -f -t 0 "pm-$rt" >/dev/null 2>&1 || true; done
    local pids
    pids=$(for dir in /proc/[0-9]*; do
        [ "$(stat -c %u "$dir" 2>/dev/null)" = "$uid" ] && echo "${dir#/proc/}"
    done || true)
    [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
    sleep 0.5
    userdel --remove "$user" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
[ -z "${KEEP:-}" ] || trap - EXIT
# Not CONTAINERS_CONF: podman's own file stays (its default_sysctls, seccomp profile).
mkdir -p "$home/.config/containers"
cp "$work/containers.conf" "$home/.config/containers/containers.conf"
chown -R "$user": "$home/.config"
cp -r "$here/images/busybox" "$work/busybox"
chmod -R a+rX "$work/busybox"
(cd /tmp && "${as_user[@]}" skopeo copy -q "oci:$work/busybox:latest" containers-storage:localhost/busybox:bench)
image=localhost/busybox:bench

runtimes=()
for rt in mm runc crun; do
    if pm "$rt" run --rm "$image" true >/dev/null 2>"$work/$rt.err"; then
        runtimes+=("$rt")
    else
        echo "podman with $rt: cannot run here: $(head -c 200 "$work/$rt.err")"
    fi
done
for i in $(seq "$rounds"); do
    for rt in "${runtimes[@]}"; do
        start=$(date +%s%N)
        pm "$rt" run --rm "$image" true </dev/null >/dev/null
        end=$(date +%s%N)
        echo "$rt $(( (end - start) / 1000 ))" >>"$work/run-times"
    done
done
for rt in "${runtimes[@]}"; do
    pm "$rt" run -d --name "pm-$rt" "$image" sleep 1000 >/dev/null
done
for i in $(seq "$rounds"); do
    for rt in "${runtimes[@]}"; do
        start=$(date +%s%N)
        pm "$rt" exec "pm-$rt" true </dev/null >/dev/null
        end=$(date +%s%N)
        echo "$rt $(( (end - start) / 1000 ))" >>"$work/exec-times"
    done
done
report() {
    echo "$2: runtime  median ms  min ms  (${rounds} rounds, interleaved, rootless; load: $(cut -d' ' -f1 /proc/loadavg))"
    median() { awk -v rt="$1" '$1 == rt { print $2 }' "$2" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
    for rt in "${runtimes[@]}"; do
        awk -v rt="$rt" '$1 == rt { print $2 }' "$1" | sort -n | awk -v rt="$rt" '
            { v[NR] = $1 } END { printf "  %-8s %9.1f %7.1f\n", rt, v[int((NR + 1) / 2)] / 1000, v[1] / 1000 }'
    done
    awk -v a="$(median mm "$1")" -v b="$(median runc "$1")" 'BEGIN { if (b > 0) printf "  mm / runc: %.2fx\n", a / b }'
}
report "$work/run-times" "podman run --rm IMAGE true"
report "$work/exec-times" "podman exec CTR true"

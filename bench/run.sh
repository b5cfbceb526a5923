#!/usr/bin/env bash
# Starting a machine: `mm run` of /bin/true beside `crun run` (without and with podman's
# seccomp profile), `bwrap` and `systemd-nspawn`, all on the same busybox rootfs, timed
# interleaved in one hyperfine run; then the memory of a supervisor that keeps a machine
# up (mm's supervisor and init, crun, nspawn). Prints medians and ratios.
#
# mm runs as it ships: user namespace (its own 65536-id block), private network, its
# cgroup with memory and pids limits, and its default seccomp filter. crun gets a user
# namespace too. Needs root; installs hyperfine, crun, bubblewrap, systemd-container and
# podman's seccomp profile when missing. RUNS=N changes the number of runs (default 30).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/run.sh needs root" >&2; exit 1; }
need=()
for tool in hyperfine:hyperfine crun:crun bwrap:bubblewrap systemd-nspawn:systemd-container; do
    command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
done
[ -e /usr/share/containers/seccomp.json ] || need+=(golang-github-containers-common)
if [ ${#need[@]} -gt 0 ]; then
    apt-get install -y -q "${need[@]}" >/dev/null
fi
cargo build -q --release
[ -e images/busybox/index.json ] || ./scripts/build-busybox-image >/dev/null
mm=$PWD/target/release/mm
work=$(mktemp -d /var/tmp/mm-bench.XXXXXX)
# The machines' own ids must be able to reach their root under it.
chmod 755 "$work"
export MM_ROOT=$work/state MM_PATH=$work/machines
cleanup() {
    "$mm" stop bench-sleep --timeout 1 >/dev/null 2>&1 || true
    [ -n "${nspawn_pid:-}" ] && kill "$nspawn_pid" 2>/dev/null || true
    [ -n "${crun_pid:-}" ] && { pkill -f "crun.*bench-sleep" 2>/dev/null; crun delete -f bench-sleep 2>/dev/null; } || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

rootfs=$work/rootfs
"$mm" image extract "oci:$PWD/images/busybox:latest" "$rootfs" >/dev/null
mkdir -p "$rootfs/usr" # systemd-nspawn refuses a tree without /usr

mkdir -p "$work/machines"
machine() { # NAME COMMAND
    cat >"$work/machines/$1.toml" <<EOF
[image]
source = "oci:$PWD/images/busybox:latest"
[exec]
command = $2
[network]
mode = "private"
[resources]
memory = "64M"
pids = 64
EOF
}
machine bench-true '["/bin/true"]'
machine bench-sleep '["/bin/sleep", "1000"]'

# OCI bundles for crun: /bin/true, in a user namespace mapped like mm's; one with podman's
# default seccomp profile (converted from the containers-common format to the runtime
# spec's). crun 1.8 refuses hybrid cgroups ("cgroups in hybrid mode not supported"), so on
# a hybrid host it runs in a mount namespace where /sys/fs/cgroup is the bare cgroup2
# tree, without limits; that wrapper is timed on its own ("v2-view") and taken off crun's
# figures.
crun=(crun)
if ! grep -q ' /sys/fs/cgroup cgroup2 ' /proc/mounts; then
    printf '%s\n' '#!/bin/sh' \
        'exec unshare -m sh -c '"'"'mount -t cgroup2 none /sys/fs/cgroup && exec "$0" "$@"'"'"' "$@"' \
        >"$work/crun-v2"
    chmod +x "$work/crun-v2"
    crun=("$work/crun-v2" crun --cgroup-manager=disabled)
fi
bundle() { # DIR SECCOMP(yes|no) ARGS-JSON
    mkdir -p "$1"
    (cd "$1" && crun spec)
    python3 - "$1/config.json" "$rootfs" "$2" "$3" <<'EOF'
import json, sys
path, rootfs, seccomp, args = sys.argv[1:]
c = json.load(open(path))
c["root"] = {"path": rootfs, "readonly": True}
c["process"]["args"] = json.loads(args)
c["process"]["terminal"] = False
c["hostname"] = "bench"
lx = c["linux"]
lx["namespaces"].append({"type": "user"})
lx["uidMappings"] = [{"containerID": 0, "hostID": 3000000, "size": 65536}]
lx["gidMappings"] = [{"containerID": 0, "hostID": 3000000, "size": 65536}]
lx.pop("resources", None)
if seccomp == "yes":
    p = json.load(open("/usr/share/containers/seccomp.json"))
    arches = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    rules = []
    for s in p["syscalls"]:
        inc = s.get("includes") or {}
        if inc.get("caps") or inc.get("minKernel"):
            continue
        if inc.get("arches") and "amd64" not in inc["arches"]:
            continue
        rule = {"names": s["names"], "action": s["action"]}
        for k in ("args", "errnoRet"):
            if s.get(k) is not None:
                rule[k] = s[k]
        rules.append(rule)
    lx["seccomp"] = {"defaultAction": p["defaultAction"],
                     "defaultErrnoRet": p.get("defaultErrnoRet", 1),
                     "architectures": arches, "syscalls": rules}
json.dump(c, open(path, "w"))
EOF
}
bundle "$work/crun" no '["/bin/true"]'
bundle "$work/crun-seccomp" yes '["/bin/true"]'
bundle "$work/crun-sleep" no '["/bin/sleep", "1000"]'

"$mm" run bench-true </dev/null # imports the image into the store once
hyperfine -N --warmup 3 --runs "${RUNS:-30}" --export-json "$work/times.json" \
    -n mm "$mm run bench-true" \
    -n crun "${crun[*]} run --bundle $work/crun bench-crun" \
    -n crun+seccomp "${crun[*]} run --bundle $work/crun-seccomp bench-crun-s" \
    -n bwrap "bwrap --unshare-all --uid 0 --gid 0 --ro-bind $rootfs / --proc /proc --dev /dev /bin/true" \
    -n nspawn "systemd-nspawn -q --register=no --keep-unit -D $rootfs /bin/true" \
    -n v2-view "${crun[0]} true" \
    >"$work/hyperfine.txt"

rss() { awk '/^VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
"$mm" start bench-sleep >/dev/null
status=$("$mm" status bench-sleep --json)
supervisor=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["supervisor"])' "$status")
leader=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["leader"])' "$status")
systemd-nspawn -q --register=no --keep-unit -D "$rootfs" /bin/sleep 1000 </dev/null >/dev/null 2>&1 &
nspawn_pid=$!
"${crun[@]}" run --bundle "$work/crun-sleep" bench-sleep </dev/null >/dev/null 2>&1 &
crun_pid=$!
sleep 2

python3 - "$work/times.json" "$(rss "$supervisor")" "$(rss "$leader")" \
    "$(rss "$nspawn_pid")" "$(rss "$crun_pid")" "${crun[0]}" <<'EOF'
import json, statistics, sys
times = {r["command"]: statistics.median(r["times"]) * 1000 for r in json.load(open(sys.argv[1]))["results"]}
sup, init, nspawn, crun = (float(x) for x in sys.argv[2:6])
print("start-up, median of interleaved runs (ms):")
for name, ms in times.items():
    print(f"  {name:14} {ms:7.1f}")
view = times.pop("v2-view")
if "crun-v2" in sys.argv[6]:
    print(f"  (crun's figures below have the {view:.1f} ms v2-view wrapper taken off)")
    for peer in ("crun", "crun+seccomp"):
        times[peer] -= view
mm = times["mm"]
print("ratios:")
for peer in ("crun", "crun+seccomp", "bwrap", "nspawn"):
    print(f"  mm / {peer:13} {mm / times[peer]:5.2f}")
print("resident memory while a machine runs `sleep` (MB):")
print(f"  mm supervisor   {sup:5.1f}")
print(f"  mm init (PID 1) {init:5.1f}")
print(f"  systemd-nspawn  {nspawn:5.1f}   (mm supervisor / nspawn: {sup / nspawn:.2f})")
print(f"  crun run        {crun:5.1f}   (mm supervisor / crun: {sup / crun:.2f})")
EOF

#!/bin/bash
# What a bundle's seccomp profile costs: the bare OCI cycle (`RUNTIME run` of a busybox
# bundle running `true`: create + start + exit + delete) with podman's default profile
# (/usr/share/containers/seccomp.json as podman writes it into config.json for x86_64),
# for mm with a cold cache (the cache emptied before each run: libseccomp compiles the
# profile), mm with a warm cache (the program read back), mm without a profile, and runc
# and crun with the same config.json. Interleaved round by round; median and min in ms.
# A runtime that cannot run the bundle here (crun on a hybrid cgroup host) is reported
# and left out. Usage: bench/oci-seccomp.sh [ROUNDS] (as root; MM=path to mm, default
# target/release/mm).
set -euo pipefail
rounds=${1:-20}
here=$(cd "$(dirname "$0")/.." && pwd)
mm=${MM:-$here/target/release/mm}
work=$(mktemp -d /tmp/mm-bench-oci-seccomp.XXXXXX)
trap 'rm -rf "$work"' EXIT
umoci unpack --image "$here/images/busybox:latest" "$work/profile" >/dev/null
python3 - "$work/profile/config.json" <<'PY'
import json, sys
path = sys.argv[1]
config = json.load(open(path))
config["process"]["terminal"] = False
config["process"]["args"] = ["true"]
caps = config["process"]["capabilities"]["bounding"]
src = json.load(open("/usr/share/containers/seccomp.json"))
arches = []
for m in src["archMap"]:
    if m["architecture"] == "SCMP_ARCH_X86_64":
        arches = [m["architecture"]] + m["subArchitectures"]
def holds(c):
    return (not c.get("arches") or "amd64" in c["arches"]) and all(x in caps for x in c.get("caps") or [])
def excluded(c):
    return "amd64" in (c.get("arches") or []) or any(x in caps for x in c.get("caps") or [])
calls = []
for s in src["syscalls"]:
    if holds(s.get("includes") or {}) and not excluded(s.get("excludes") or {}):
        rule = {"names": s["names"], "action": s["action"]}
        for k in ("args", "errnoRet"):
            if s.get(k) is not None:
                rule[k] = s[k]
        calls.append(rule)
config["linux"]["seccomp"] = {"defaultAction": src["defaultAction"],
    "defaultErrnoRet": src["defaultErrnoRet"], "architectures": arches, "syscalls": calls}
json.dump(config, open(path, "w"), indent=1)
print(f"podman's profile: {sum(len(c['names']) for c in calls)} names in {len(calls)} rules")
PY
# The same bundle without a profile, for the baseline.
cp -a "$work/profile" "$work/none"
python3 - "$work/none/config.json" <<'PY'
import json, sys
path = sys.argv[1]
config = json.load(open(path))
del config["linux"]["seccomp"]
json.dump(config, open(path, "w"), indent=1)
PY
export MM_ROOT="$work/mm"
cache="$MM_ROOT/cache/seccomp"
# name: runtime command, bundle, whether the cache is emptied first
declare -A cmd=([mm-cold]="$mm oci --debug --log $work/mm-cold.log" [mm-warm]="$mm oci --debug --log $work/mm-warm.log" [mm-none]="$mm oci" [runc]="runc" [runc-none]="runc" [crun]="crun")
declare -A dir=([mm-cold]=profile [mm-warm]=profile [mm-none]=none [runc]=profile [runc-none]=none [crun]=profile)
runs=()
for name in mm-cold mm-warm mm-none runc runc-none crun; do
    if (cd "$work/${dir[$name]}" && ${cmd[$name]} --root "$work/$name" run "probe-$name" </dev/null >/dev/null 2>"$work/$name.err"); then
        runs+=("$name")
    else
        echo "$name: cannot run the bundle here: $(head -c 200 "$work/$name.err")"
    fi
done
for i in $(seq "$rounds"); do
    for name in "${runs[@]}"; do
        [ "$name" = mm-cold ] && rm -rf "$cache"
        start=$(date +%s%N)
        (cd "$work/${dir[$name]}" && ${cmd[$name]} --root "$work/$name" run "c$i" </dev/null >/dev/null)
        end=$(date +%s%N)
        echo "$name $(( (end - start) / 1000 ))" >>"$work/times"
    done
done
ls "$cache" | sed 's/^/cache entry: /'
echo "run        median ms  min ms  (${rounds} rounds, interleaved; load: $(cut -d' ' -f1 /proc/loadavg))"
for name in "${runs[@]}"; do
    awk -v n="$name" '$1 == n { print $2 }' "$work/times" | sort -n | awk -v n="$name" '
        { v[NR] = $1 } END { printf "%-10s %9.1f %7.1f\n", n, v[int((NR + 1) / 2)] / 1000, v[1] / 1000 }'
done
# What mm's own log says the profile took: compiling it (cold) or reading it back (warm).
for name in mm-cold mm-warm; do
    [ -f "$work/$name.log" ] || continue
    grep -oE 'seccomp: (compiled|cached) [^ ]+ \([0-9]+ instructions, [0-9.]+ ms' "$work/$name.log" |
        sed -E 's/.*\(([0-9]+) instructions, ([0-9.]+) ms/\1 \2/' | sort -k2 -n |
        awk -v n="$name" '{ i = $1; v[NR] = $2 } END { if (NR) printf "%s: the profile (%d instructions) %s in %.1f ms (median of %d)\n", n, i, n == "mm-cold" ? "compiled" : "read from the cache", v[int((NR + 1) / 2)], NR }'
done

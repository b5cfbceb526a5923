#!/usr/bin/env bash
# Developer environments on the same Debian 12 image (images/debian, from
# scripts/build-debian-image; copied into podman's store with skopeo as
# localhost/mm-debian:12): mm against podman, distrobox and toolbox. Everything runs
# rootless, as the ordinary user mmbench-dev, which the script creates (useradd gives it a
# subordinate range) and removes at the end: toolbox refuses root, distrobox is rootless by
# default, and a developer environment is a user's. mm runs the `dev` example itself
# (machines/dev.toml: the host's network, this checkout at /src, persistent).
#
#   1. Entering a running environment, one interleaved run: ROUNDS hyperfine calls of
#      RUNS/ROUNDS runs each (1 warm-up), the order of the commands shuffled in every call
#      (hyperfine 1.15 has no --shuffle); medians over all runs:
#        mm exec                 mm exec dev -- true
#        mm exec, login shell    mm exec dev -- bash -lc true: `mm shell` takes no command
#                                (no -c), so this is what `mm shell dev -c true` would run
#        podman exec             podman exec bench-podman true (a `podman run -d` container)
#        distrobox enter         distrobox enter bench-distrobox -- true
#        toolbox run             toolbox run -c bench-toolbox true
#   2. First start, create + first enter, FIRST rounds (default 3), the order shuffled:
#        mm                      mm start dev && mm exec dev -- true, after `mm rm dev` (the
#                                image already in mm's store, as it is in podman's)
#        distrobox               distrobox create -i localhost/mm-debian:12 && distrobox
#                                enter -- true, after `distrobox rm`: its first enter installs
#                                what distrobox-init misses in the image (curl, wget, bc,
#                                lsof, pinentry, time…) with apt, from Debian's mirror
#        distrobox, prepared     the same from an image that has them (the first distrobox
#                                container, committed): distrobox's own start-up cost
#   Prints medians and the ratios the issue sets targets for: entering ≤ 0.05× podman exec,
#   first start ≤ 0.2× distrobox's.
#
# On a host without systemd as PID 1 and with hybrid cgroups (this one), podman runs with
# runc (crun refuses hybrid cgroups: "cgroups in hybrid mode not supported"),
# cgroup_manager = "cgroupfs" and events_logger = "file" (no systemd, no journal), in the
# user's ~/.config/containers. runc under `--userns keep-id` (distrobox's and toolbox's
# containers) cannot traverse the user's 0700 ~/.local/share/containers to the rootfs (the
# container's root is a subordinate id there; crun opens it before): those directories are
# made 0711 for the run.
#
# Needs root and Debian's mirror (the image build when it is missing, distrobox's first
# enter). Installs hyperfine, podman, runc, skopeo, distrobox and podman-toolbox when
# missing. RUNS=N (default 40), ROUNDS=N (default 8), FIRST=N (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/devenv.sh needs root (it creates its user)" >&2; exit 1; }
for tool in hyperfine:hyperfine podman:podman runc:runc skopeo:skopeo distrobox:distrobox \
    toolbox:podman-toolbox; do
    command -v "${tool%%:*}" >/dev/null ||
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${tool#*:}" >/dev/null
done
cargo build -q --release
./scripts/build-debian-image >/dev/null
runs=${RUNS:-40} rounds=${ROUNDS:-8} first=${FIRST:-3}
checkout=$PWD
mm=$checkout/target/release/mm
user=mmbench-dev
image=localhost/mm-debian:12

work=$(mktemp -d /var/tmp/mm-bench-devenv.XXXXXX)
chmod 755 "$work"
useradd --create-home --shell /bin/bash "$user"
home=$(getent passwd "$user" | cut -d: -f6)
uid=$(id -u "$user")
grep -q "^$user:" /etc/subuid || usermod --add-subuids 600000-665535 --add-subgids 600000-665535 "$user"
mkdir -p "$work/run" "$work/mm" "$work/out" "$home/.config/containers"
cat >"$home/.config/containers/containers.conf" <<'EOF'
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
printf '[storage]\ndriver = "overlay"\n' >"$home/.config/containers/storage.conf"
chown -R "$user": "$work/run" "$work/mm" "$work/out" "$home/.config"
chmod 700 "$work/run"
cp "$mm" "$work/mm-bin"
chmod 755 "$work/mm-bin"
mm=$work/mm-bin
as_user=(setpriv --reuid "$user" --regid "$(id -g "$user")" --init-groups --
    env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$home" USER="$user" LOGNAME="$user"
    SHELL=/bin/bash TERM=dumb XDG_RUNTIME_DIR="$work/run" MM_ROOT="$work/mm"
    MM_PATH="$checkout/machines")
u() { (cd /tmp && "${as_user[@]}" "$@"); }

cleanup() {
    u "$mm" stop dev --timeout 2 >/dev/null 2>&1 || true
    u podman rm -f -t 0 bench-podman bench-distrobox bench-toolbox >/dev/null 2>&1 || true
    u podman system reset -f >/dev/null 2>&1 || true
    # The user's processes left (podman's pause process, conmon): this script's own user.
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

echo "==> podman: $image (skopeo copy oci:images/debian:12), a running container" >&2
u skopeo copy -q oci:"$checkout"/images/debian:12 containers-storage:"$image" >/dev/null
local_share=$home/.local/share
chmod 711 "$home" "$home/.local" "$local_share" "$local_share/containers" \
    "$local_share/containers/storage" "$local_share/containers/storage/overlay"
# toolbox first: its first command runs `podman system migrate`, which stops every
# running container of the user.
echo "==> toolbox: bench-toolbox" >&2
u toolbox create --image "$image" bench-toolbox >/dev/null 2>&1
u toolbox run -c bench-toolbox true >"$work/toolbox-first.log" 2>&1 ||
    { tail -n 20 "$work/toolbox-first.log" >&2; echo "toolbox run failed" >&2; exit 1; }
u podman run -d --name bench-podman "$image" >/dev/null
echo "==> mm: dev, its image imported first" >&2
u "$mm" image import oci:"$checkout"/images/debian:12 >/dev/null 2>&1
u "$mm" start dev >/dev/null 2>&1
echo "==> distrobox: bench-distrobox, created and entered once (it installs its dependencies)" >&2
u distrobox create --image "$image" --name bench-distrobox --yes >/dev/null 2>&1
u distrobox enter bench-distrobox -- true >"$work/distrobox-first.log" 2>&1 ||
    { tail -n 20 "$work/distrobox-first.log" >&2; echo "distrobox enter failed" >&2; exit 1; }
u podman commit -q bench-distrobox localhost/mm-debian-distrobox:12 >/dev/null

names=("mm exec" "mm exec, login shell" "podman exec" "distrobox enter" "toolbox run")
commands=("$mm exec dev -- true" "$mm exec dev -- bash -lc true" "podman exec bench-podman true"
    "distrobox enter bench-distrobox -- true" "toolbox run -c bench-toolbox true")
# Each once first, so that a failing one is named with what it said.
for i in "${!names[@]}"; do
    u sh -c "${commands[$i]}" </dev/null >"$work/check.log" 2>&1 ||
        { cat "$work/check.log" >&2; echo "${names[$i]} fails: ${commands[$i]}" >&2; exit 1; }
done
per_round=$(((runs + rounds - 1) / rounds))
echo "==> entering: $rounds rounds of $per_round runs" >&2
for round in $(seq "$rounds"); do
    args=()
    for i in $(shuf -e "${!names[@]}"); do args+=(-n "${names[$i]}" "${commands[$i]}"); done
    u hyperfine -N --warmup 1 --runs "$per_round" --export-json "$work/out/enter-$round.json" \
        "${args[@]}" </dev/null >/dev/null 2>>"$work/hyperfine.err" ||
        { cat "$work/hyperfine.err" >&2; exit 1; }
done

# First start: each case removes what the last one made, then creates and enters.
echo "==> first start: $first rounds" >&2
fnames=("mm" "distrobox" "distrobox, prepared")
fcommands=("$mm start dev && $mm exec dev -- true"
    "distrobox create -i $image -n bench-distrobox --yes && distrobox enter bench-distrobox -- true"
    "distrobox create -i localhost/mm-debian-distrobox:12 -n bench-distrobox --yes && distrobox enter bench-distrobox -- true")
fprepare=("$mm stop dev; $mm rm dev"
    "distrobox rm -f bench-distrobox"
    "distrobox rm -f bench-distrobox")
for round in $(seq "$first"); do
    args=()
    for i in $(shuf -e "${!fnames[@]}"); do
        args+=(--prepare "${fprepare[$i]} >/dev/null 2>&1 || true" -n "${fnames[$i]}" "${fcommands[$i]} >/dev/null 2>&1")
    done
    u hyperfine --runs 1 --export-json "$work/out/first-$round.json" "${args[@]}" \
        </dev/null >/dev/null 2>>"$work/hyperfine.err" || { cat "$work/hyperfine.err" >&2; exit 1; }
done

python3 - "$work/out" "$rounds" "$first" <<'PY'
import glob, json, statistics, sys
work, rounds, first = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def medians(pattern):
    times = {}
    for path in sorted(glob.glob(f"{work}/{pattern}")):
        for r in json.load(open(path))["results"]:
            times.setdefault(r["command"], []).extend(r["times"])
    return {k: statistics.median(times[k]) * 1000 for k in order if k in times}, min(len(v) for v in times.values())
order = ["mm exec", "mm exec, login shell", "podman exec", "distrobox enter", "toolbox run",
         "mm", "distrobox", "distrobox, prepared"]
enter, n = medians("enter-*.json")
print(f"entering a running environment, median of {n} interleaved runs each:")
for name, ms in enter.items():
    print(f"  {name:24} {ms:9.2f} ms")
pe = enter["podman exec"]
for name in ["mm exec", "mm exec, login shell"]:
    print(f"  {name} / podman exec: {enter[name] / pe:.3f} (target ≤ 0.05)")
for name in ["distrobox enter", "toolbox run"]:
    print(f"  mm exec / {name}: {enter['mm exec'] / enter[name]:.4f}")
start, n = medians("first-*.json")
print(f"first start (create + first enter), median of {n} interleaved runs each:")
for name, ms in start.items():
    print(f"  {name:24} {ms:9.0f} ms")
for name in ["distrobox", "distrobox, prepared"]:
    print(f"  mm / {name}: {start['mm'] / start[name]:.3f} (target ≤ 0.2)")
PY

#!/usr/bin/env bash
# What systemd-nspawn and podman leave when they are killed with SIGKILL at a random
# moment of a start, for docs/reliability.md beside mm's figures (bench/faults.sh):
#
#   nspawn   `systemd-nspawn -D ROOT --keep-unit --register=no /bin/sleep 1000` killed
#            after 0-300 ms: is the container's payload still running, is a mount of ROOT
#            left in any namespace, does the next nspawn on ROOT start?
#   podman   `podman run -d --network none IMAGE sleep 1000` killed after 0-1500 ms: what
#            `podman ps -a` says, whether conmon or the payload run on, whether
#            `podman rm -f NAME` and a new `podman run --name NAME` work;
#   conmon   conmon of a running container killed: what podman says of the container,
#            whether its payload runs on, and whether `podman stop` / `rm -f` work.
#
# Root only. podman runs rootless, as a user this script makes (mmbench-faults) with
# runc, cgroupfs and file events (bench/devenv.sh says why on this host; as root, runc
# fails here: "error setting rlimits for ready process ... operation not permitted").
# ROUNDS=N (default 10), PEERS="nspawn podman conmon" (which). Prints one line per round
# and the counts.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/faults-peers.sh needs root" >&2; exit 1; }
for tool in podman:podman runc:runc systemd-nspawn:systemd-container; do
    command -v "${tool%%:*}" >/dev/null ||
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${tool#*:}" >/dev/null
done
rounds=${ROUNDS:-10}
peers=${PEERS:-nspawn podman conmon}
want() { case " $peers " in *" $1 "*) return 0 ;; esac; return 1; }
# The binary as built (bench/faults.sh may be running from it: no rebuild under it).
mm=$PWD/target/debug/mm
[ -x "$mm" ] || cargo build -q
# Lower case: podman names an image pulled from oci:PATH after PATH.
work=/var/tmp/mm-faults-peers-$$
mkdir "$work"
chmod 755 "$work"
user=mmbench-faults
useradd --create-home --shell /bin/sh "$user"
home=$(getent passwd "$user" | cut -d: -f6)
uid=$(id -u "$user")
grep -q "^$user:" /etc/subuid || usermod --add-subuids 700000-765535 --add-subgids 700000-765535 "$user"
mkdir -p "$work/run" "$home/.config/containers"
printf '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n' \
    >"$home/.config/containers/containers.conf"
printf '[storage]\ndriver = "overlay"\n' >"$home/.config/containers/storage.conf"
chown -R "$user": "$work/run" "$home/.config"
chmod 700 "$work/run"
P=(setpriv --reuid "$user" --regid "$(id -g "$user")" --init-groups --
    env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$home" USER="$user" LOGNAME="$user"
    XDG_RUNTIME_DIR="$work/run" podman)
cleanup() {
    (cd /tmp && "${P[@]}" rm -a -f -t 0 >/dev/null 2>&1) || true
    (cd /tmp && "${P[@]}" system reset -f >/dev/null 2>&1) || true
    for dir in /proc/[0-9]*; do
        [ "$(stat -c %u "$dir" 2>/dev/null)" = "$uid" ] && kill -9 "${dir#/proc/}" 2>/dev/null
    done || true
    # Processes of this run only: their command line or root names $work.
    for dir in /proc/[0-9]*; do
        if { tr '\0' ' ' <"$dir/cmdline" | grep -q "$work"; } 2>/dev/null ||
            grep -qs "$work/root" "$dir/mountinfo"; then
            kill -9 "${dir#/proc/}" 2>/dev/null || true
        fi
    done
    sleep 0.5
    grep -h "$work" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    userdel --remove "$user" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
rand_ms() { echo $((RANDOM % $1)); }
sleep_ms() { sleep "$(printf '0.%03d' "$1")"; }
# The processes of a container on DIR: those whose mount table names DIR (its root, from
# the host's side; /proc/PID/root reads "/" for a process inside it).
inside() { for d in /proc/[0-9]*; do grep -qs "$1" "$d/mountinfo" && echo "${d#/proc/}"; done || true; }
payload() { inside "$1" | wc -l; }
mounts() {
    local seen="" n=0 ns
    for d in /proc/[0-9]*; do
        ns=$(readlink "$d/ns/mnt" 2>/dev/null) || continue
        case " $seen " in *" $ns "*) continue ;; esac
        seen="$seen $ns"
        c=$(grep -c "$1" "$d/mountinfo" 2>/dev/null) || c=0
        n=$((n + ${c:-0}))
    done
    echo "$n"
}

if want nspawn; then
echo "==> systemd-nspawn (systemd $(systemd-nspawn --version | awk 'NR==1{print $2}')), $rounds rounds"
MM_ROOT=$work/mm "$mm" image extract "oci:$PWD/images/busybox:latest" "$work/root" >/dev/null
mkdir -p "$work/root/usr" # nspawn wants an OS tree
scope=machine.slice/mm-faults-peers.scope
for tree in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified /sys/fs/cgroup; do
    [ -e "$tree/cgroup.procs" ] || continue
    mkdir -p "$tree/$scope" && echo $$ >"$tree/$scope/cgroup.procs"
done
n_left=0 n_mounts=0 n_restart=0
for i in $(seq "$rounds"); do
    systemd-nspawn -q -D "$work/root" --keep-unit --register=no /bin/sleep 1000 </dev/null >/dev/null 2>&1 &
    pid=$!
    ms=$(rand_ms 300)
    sleep_ms "$ms"
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    sleep 0.2
    left=$(payload "$work/root") mounted=$(mounts "$work/root")
    # The next start on the same directory.
    if timeout 5 systemd-nspawn -q -D "$work/root" --keep-unit --register=no /bin/true </dev/null >/dev/null 2>&1; then next=ok; else next=failed; n_restart=$((n_restart + 1)); fi
    [ "$left" = 0 ] || n_left=$((n_left + 1))
    [ "$mounted" = 0 ] || n_mounts=$((n_mounts + 1))
    echo "nspawn round $i: killed after ${ms} ms: payload processes left $left, mounts left $mounted, next start $next"
    [ "$mounted" = 0 ] || { grep -h "$work/root" /proc/[0-9]*/mountinfo 2>/dev/null | sort -u | sed 's/^/    /' | head -3; } || true
    for p in $(inside "$work/root"); do kill -9 "$p" 2>/dev/null || true; done
    sleep 0.2
done
echo "nspawn: $rounds kills: payload left running $n_left, mounts left $n_mounts, next start failed $n_restart"
fi

if want podman || want conmon; then
cp -r images/busybox "$work/busybox" && chmod -R a+rX "$work/busybox"
cd /tmp
"${P[@]}" pull -q "oci:$work/busybox:latest" >/dev/null
image=$("${P[@]}" images -q | head -1)
fi
if want podman; then
echo "==> podman $(podman --version | awk '{print $3}') (rootless, runc, cgroupfs), $rounds rounds"
n_states="" n_conmon=0 n_rm=0
for i in $(seq "$rounds"); do
    name=peer$i
    "${P[@]}" run -d --network none --name "$name" "$image" sleep 1000 </dev/null >/dev/null 2>&1 &
    pid=$!
    ms=$(rand_ms 1500)
    sleep_ms "$((ms % 1000))"; [ "$ms" -lt 1000 ] || sleep 1
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    state=$("${P[@]}" ps -a --filter name="^$name\$" --format '{{.State}}' 2>/dev/null || echo "ps failed")
    conmon=$(pgrep -u "$uid" -c conmon 2>/dev/null || true)
    if "${P[@]}" rm -f -t 0 "$name" >/dev/null 2>&1 &&
        "${P[@]}" run -d --network none --name "$name" "$image" true >/dev/null 2>&1 &&
        "${P[@]}" rm -f -t 0 "$name" >/dev/null 2>&1; then next=ok; else next=failed; n_rm=$((n_rm + 1)); fi
    echo "podman round $i: killed after ${ms} ms: ps says '${state:-nothing}', conmon processes $conmon, rm -f + run again $next"
    n_states="$n_states $(echo "${state:-none}" | cut -d" " -f1)"
    "${P[@]}" rm -a -f -t 0 >/dev/null 2>&1 || true
done
sleep 1
echo "podman: conmon processes still running after every container was removed (rm -a -f): $(pgrep -u "$uid" -c conmon || true)"
echo "podman: $rounds kills of podman run; states seen:$(echo "$n_states" | tr ' ' '\n' | grep -v '^$' | sort | uniq -c | awk '{printf " %s×%s", $1, $2}'); rm -f + run again failed $n_rm"

fi
if want conmon; then
echo "==> conmon killed under a running container, $rounds rounds"
n_alive=0 n_status=""
for i in $(seq "$rounds"); do
    name=conmon$i
    "${P[@]}" run -d --network none --name "$name" "$image" sleep 1000 >/dev/null
    cpid=$("${P[@]}" inspect --format '{{.State.ConmonPid}}' "$name")
    kill -9 "$cpid"
    sleep 0.3
    status=$("${P[@]}" inspect --format '{{.State.Status}}' "$name" 2>&1 || true)
    ppid=$("${P[@]}" inspect --format '{{.State.Pid}}' "$name" 2>/dev/null || echo 0)
    alive=no; [ "$ppid" != 0 ] && [ -e "/proc/$ppid" ] && alive=yes && n_alive=$((n_alive + 1))
    if timeout 30 "${P[@]}" stop -t 1 "$name" >/dev/null 2>&1; then stop=ok; else stop=failed; fi
    after=$("${P[@]}" inspect --format '{{.State.Status}} exit={{.State.ExitCode}}' "$name" 2>&1 || true)
    echo "conmon round $i: podman says '$status', payload alive $alive; podman stop $stop, then '$after'"
    n_status="$n_status $status"
    "${P[@]}" rm -f -t 0 "$name" >/dev/null 2>&1 || true
done
echo "conmon: $rounds kills: payload ran on $n_alive; podman said:$(echo "$n_status" | tr ' ' '\n' | grep -v '^$' | sort | uniq -c | awk '{printf " %s×%s", $1, $2}')"
fi

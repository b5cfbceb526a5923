#!/usr/bin/env bash
# Machine networks: what mm's veth and zone networks cost a start and what they carry,
# beside systemd-nspawn, a bare veth pair and slirp4netns run by hand. In one run:
#
#   1. start cost: `mm run` of /bin/true with `mode = "private"`, `"veth"` and a zone,
#      beside `systemd-nspawn --private-network`, `--network-veth` and
#      `--network-zone=bench` on the same busybox rootfs (`-q --register=no --keep-unit`,
#      as bench/run.sh runs nspawn). hyperfine 1.15 has no --shuffle: the runs are made in
#      ROUNDS hyperfine calls of RUNS/ROUNDS runs each (1 warm-up), the order of the six
#      commands shuffled in every call; medians over all runs. Prints what the network
#      adds (veth − private, zone − private) to each, and mm's over nspawn's.
#   2. TCP throughput, iperf3 (`-t SECONDS_PER_RUN`, default 5; the receiver's rate;
#      median of TRUNS, default 3, the cases interleaved round by round), host → machine:
#        mm veth, direct         client in the bench's host namespace to the machine's
#                                address (read with `mm exec M -- ip -4 addr show host0`)
#        mm veth, forward        the same machine through `ports = ["5201:5201"]`, the
#                                client to the host's own address (on its uplink)
#        mm zone                 a zone's machine (bridge vz-mmtp), to its address
#        bare veth               a veth pair made by hand to a second namespace, same MTU
#        mm rootless, forward    as the ordinary user mmbench-net: mm's slirp4netns, host
#                                port 15201 forwarded to the machine's 5201, client to
#                                127.0.0.1:15201
#        mm rootless zone, fwd   as mmbench-net, a machine of a rootless zone (mm's zone
#                                keeper; slirp4netns forward 15203 to the zone, the zone's
#                                DNAT to the machine's 5201), client to 127.0.0.1:15203
#        slirp4netns by hand     as mm runs it (MTU 65520, --disable-host-loopback,
#                                --enable-sandbox, --enable-seccomp), a namespace from
#                                `unshare -rn`, add_hostfwd 0.0.0.0:15202 → 5201 on its
#                                API socket (as bench/rootless-net.sh; mm asks the same)
#      The machines' image is a rootfs directory (busybox, /usr/bin/iperf3 and the
#      libraries ldd names), given as `rootfs:DIR`. Prints Gbit/s and the ratios
#      mm veth / bare veth, forward / direct, rootless mm / slirp4netns by hand.
#
# Everything runs in network namespaces the script makes: mmbench-$$ stands in for the
# host (loopback, and as its "uplink" a bridge without ports, 198.18.0.1/24, with a
# default route through it to nothing), mmbench-$$-peer is the bare veth's far end
# (198.19.0.1/30 ↔ 198.19.0.2/30). Packets go only to those addresses, mm's machines'
# and loopback. Every command is bounded in time.
#
# Needs root; installs hyperfine, iperf3, systemd-container, slirp4netns, nftables and
# uidmap when missing. Creates the user mmbench-net (useradd gives it its /etc/subuid
# range) and removes it at the end; makes /dev/net/tun 0666 for the run if it is not.
# RUNS=N (default 30), ROUNDS=N (default 10), TRUNS=N, SECONDS_PER_RUN=N.
set -euo pipefail
[ -z "${TRACE:-}" ] || set -x

if [ "${1:-}" = --inside ]; then
    # In the bench's host namespace. $2: the work directory, $3: the rootless user.
    work=$2 user=$3
    mm=$PWD/target/release/mm
    runs=${RUNS:-30} rounds=${ROUNDS:-10} truns=${TRUNS:-3} secs=${SECONDS_PER_RUN:-5}
    export MM_ROOT=$work/state MM_PATH=$work/machines
    uplink=198.18.0.1
    peer_ns=${PEER_NS:?}
    py=$work/bench.py
    as_user=(setpriv --reuid "$user" --regid users --init-groups --
        env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$work/home" USER="$user"
        MM_ROOT="$work/user/state" MM_PATH="$work/user/machines")
    pids=()
    cleanup_inside() {
        for m in tp-veth tp-zone start-keeper; do timeout 20 "$mm" stop "$m" --timeout 2 >/dev/null 2>&1 || true; done
        for m in tp-rootless tp-rzone; do timeout 20 "${as_user[@]}" "$mm" stop "$m" --timeout 2 >/dev/null 2>&1 || true; done
        for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
        wait 2>/dev/null || true
    }
    trap cleanup_inside EXIT

    # This mount namespace's own /sys shows the bench's network namespace, as
    # `ip netns exec` makes it, with the host's cgroup trees put back (mm and nspawn need
    # them). nspawn reads /sys/class/net/BRIDGE/brif to decide whether a zone's bridge is
    # left empty and must go: with the host's /sys it never removes it.
    mkdir "$work/cgroup"
    mount --rbind /sys/fs/cgroup "$work/cgroup"
    umount --lazy /sys
    mount -t sysfs sysfs /sys
    mount --move "$work/cgroup" /sys/fs/cgroup

    ip link set lo up
    ip link add uplink0 type bridge
    ip link set uplink0 mtu 1500 up
    [ -e /sys/class/net/uplink0 ] || { echo "/sys does not show the bench's namespace" >&2; exit 1; }
    ip addr add "$uplink/24" dev uplink0
    ip route add default via 198.18.0.254 dev uplink0
    ip link add bv-host mtu 1500 type veth peer name bv-peer mtu 1500 netns "$peer_ns"
    ip addr add 198.19.0.1/30 dev bv-host
    ip link set bv-host up
    ip -n "$peer_ns" link set lo up
    ip -n "$peer_ns" addr add 198.19.0.2/30 dev bv-peer
    ip -n "$peer_ns" link set bv-peer up

    cat >"$py" <<'PY'
import json, os, socket, statistics, sys, time

cmd = sys.argv[1]
if cmd == "listening":
    # listening PID PORT: wait (10 s at most) until a TCP socket listens on PORT in
    # PID's network namespace.
    pid, port = sys.argv[2], int(sys.argv[3])
    end = time.monotonic() + 10
    while time.monotonic() < end:
        for table in ("tcp", "tcp6"):
            try:
                with open(f"/proc/{pid}/net/{table}") as f:
                    for line in list(f)[1:]:
                        fields = line.split()
                        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
                            sys.exit(0)
            except OSError:
                pass
        time.sleep(0.02)
    sys.exit(f"nothing listens on port {port} in the namespace of {pid} after 10 s")
elif cmd == "field":
    # field KEY: KEY of the JSON object on standard input.
    print(json.load(sys.stdin)[sys.argv[2]])
elif cmd == "hostfwd":
    # hostfwd SOCKET HOST_PORT GUEST_PORT: slirp4netns's add_hostfwd on 0.0.0.0, as mm
    # asks it for `ports = ["HOST_PORT:GUEST_PORT"]`.
    path, host_port, guest_port = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    request = {"execute": "add_hostfwd", "arguments": {"proto": "tcp",
               "host_addr": "0.0.0.0", "host_port": host_port, "guest_port": guest_port}}
    end = time.monotonic() + 5
    while True:
        try:
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(5)
            s.connect(path)
            break
        except OSError:
            if time.monotonic() > end:
                sys.exit(f"{path}: no API socket after 5 s")
            time.sleep(0.005)
    s.sendall(json.dumps(request).encode())
    s.shutdown(socket.SHUT_WR)
    answer = json.loads(s.recv(4096))
    if "return" not in answer:
        sys.exit(f"add_hostfwd: {answer}")
elif cmd == "gbits":
    with open(sys.argv[2]) as f:
        print(f'{json.load(f)["end"]["sum_received"]["bits_per_second"] / 1e9:.3f}')
elif cmd == "start-report":
    # start-report JSON...: the medians over every round's runs, and what networks add.
    times = {}
    for path in sys.argv[2:]:
        for r in json.load(open(path))["results"]:
            times.setdefault(r["command"], []).extend(r["times"])
    med = {name: statistics.median(t) * 1000 for name, t in times.items()}
    n = min(len(t) for t in times.values())
    print(f"start-up, median of {n} interleaved runs each (ms):")
    for name in ["mm private", "mm veth", "mm zone", "mm zone, bridge kept",
                 "nspawn private", "nspawn veth", "nspawn zone"]:
        t = sorted(x * 1000 for x in times[name])
        q1, q3 = t[len(t) // 4], t[(3 * len(t)) // 4]
        print(f"  {name:15} {med[name]:7.1f}   (quartiles {q1:.1f}-{q3:.1f})")
    for net in ["veth", "zone"]:
        ours = med[f"mm {net}"] - med["mm private"]
        theirs = med[f"nspawn {net}"] - med["nspawn private"]
        ratio = f"{ours / theirs:.2f}" if theirs > 0 else "n/a (nspawn adds nothing)"
        print(f"network setup adds, {net}: mm {ours:.1f} ms, nspawn {theirs:.1f} ms, "
              f"mm-added / nspawn-added {ratio}")
    kept = med["mm zone, bridge kept"] - med["mm private"]
    print(f"network setup adds, zone whose bridge stays up: mm {kept:.1f} ms")
    print(f"mm / nspawn, veth start: {med['mm veth'] / med['nspawn veth']:.2f}")
elif cmd == "tput-report":
    # tput-report FILE: lines "CASE GBITS"; medians, ranges and ratios.
    rates = {}
    for line in open(sys.argv[2]):
        name, value = line.rsplit(" ", 1)
        rates.setdefault(name, []).append(float(value))
    med = {name: statistics.median(v) for name, v in rates.items()}
    print("TCP host -> machine, iperf3, Gbit/s (median, min-max):")
    for name, v in rates.items():
        print(f"  {name:24} {med[name]:6.2f}  ({min(v):.2f}-{max(v):.2f}, {len(v)} runs)")
    def ratio(a, b, target):
        if a in med and b in med:
            r = med[a] / med[b]
            verdict = "" if target is None else (" met" if r >= target else " NOT met")
            goal = "" if target is None else f" (target >= {target}:{verdict})"
            print(f"  {a} / {b}: {r:.2f}{goal}")
    ratio("mm veth, direct", "bare veth", 0.95)
    ratio("mm veth, forward", "mm veth, direct", 0.9)
    ratio("mm zone", "bare veth", None)
    ratio("mm rootless, forward", "slirp4netns by hand", None)
    ratio("mm rootless zone, fwd", "slirp4netns by hand", None)
PY
    chmod 644 "$py"

    load_before=$(cut -d' ' -f1-3 /proc/loadavg)
    # --- 1. start cost ----------------------------------------------------------------
    machine() { # NAME NETWORK-LINE
        cat >"$work/machines/$1.toml" <<EOF
[image]
source = "oci:$PWD/images/busybox:latest"
[exec]
command = ["/bin/true"]
[network]
$2
[resources]
memory = "64M"
pids = 64
EOF
    }
    mkdir -p "$work/machines"
    machine start-private 'mode = "private"'
    machine start-veth 'mode = "veth"'
    machine start-zone 'zone = "mmbench"'
    # A zone whose bridge another machine keeps up: what the bridge itself costs.
    machine start-zone-kept 'zone = "mmkeep"'
    sed 's|"/bin/true"|"/bin/sleep", "3600"|' "$work/machines/start-zone-kept.toml" >"$work/machines/start-keeper.toml"
    timeout 30 "$mm" start --no-systemd start-keeper >/dev/null
    rootfs=$work/rootfs
    nspawn="systemd-nspawn -q --register=no --keep-unit -D $rootfs"
    names=("mm private" "mm veth" "mm zone" "mm zone, bridge kept"
        "nspawn private" "nspawn veth" "nspawn zone")
    commands=("$mm run start-private" "$mm run start-veth" "$mm run start-zone"
        "$mm run start-zone-kept"
        "$nspawn --private-network /bin/true" "$nspawn --network-veth /bin/true"
        "$nspawn --network-zone=bench /bin/true")
    indexes=(0 1 2 3 4 5 6)
    for i in "${indexes[@]}"; do
        # The image goes into the store once; each command must work before it is timed.
        timeout 30 ${commands[$i]} </dev/null >/dev/null 2>"$work/first.err" ||
            { echo "${names[$i]} fails:" >&2; cat "$work/first.err" >&2; exit 1; }
    done
    per_round=$(((runs + rounds - 1) / rounds))
    jsons=()
    for round in $(seq "$rounds"); do
        args=()
        for i in $(shuf -e "${indexes[@]}"); do args+=(-n "${names[$i]}" "${commands[$i]}"); done
        timeout 300 hyperfine -N --warmup 1 --runs "$per_round" \
            --export-json "$work/start-$round.json" "${args[@]}" </dev/null >/dev/null 2>>"$work/hyperfine.err" ||
            { cat "$work/hyperfine.err" >&2; exit 1; }
        jsons+=("$work/start-$round.json")
    done
    timeout 20 "$mm" stop start-keeper --timeout 2 >/dev/null
    ip link show vz-bench >/dev/null 2>&1 && echo "nspawn left its zone's bridge vz-bench" >&2
    echo "done: start cost" >&2

    # --- 2. throughput ----------------------------------------------------------------
    # The machines' image: busybox, iperf3 and its libraries.
    iperf_root=$work/iperf-rootfs
    cp -a "$rootfs" "$iperf_root"
    mkdir -p "$iperf_root/usr/bin"
    cp "$(readlink -f /usr/bin/iperf3)" "$iperf_root/usr/bin/iperf3"
    for lib in $(ldd /usr/bin/iperf3 | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
        mkdir -p "$iperf_root$(dirname "$lib")"
        cp -L "$lib" "$iperf_root$lib"
    done
    chmod -R a+rX "$iperf_root"
    # A rootless machine's root is the user: its copy is the user's, or its root could not
    # write there (mount points, /tmp).
    cp -a "$iperf_root" "$iperf_root-user"
    chown -R "$user:users" "$iperf_root-user"
    iperf_machine() { # DIR NAME NETWORK-LINES [ROOT]
        mkdir -p "$1"
        cat >"$1/$2.toml" <<EOF
[image]
source = "rootfs:${4:-$iperf_root}"
[exec]
command = ["/usr/bin/iperf3", "-s", "-p", "5201"]
[network]
$3
EOF
    }
    iperf_machine "$work/machines" tp-veth $'mode = "veth"\nports = ["5201:5201"]'
    iperf_machine "$work/machines" tp-zone 'zone = "mmtp"'
    mkdir -p "$work/user/machines" "$work/home"
    iperf_machine "$work/user/machines" tp-rootless $'mode = "veth"\nports = ["15201:5201"]' "$iperf_root-user"
    iperf_machine "$work/user/machines" tp-rzone $'zone = "mmrz"\nports = ["15203:5201"]' "$iperf_root-user"
    chown -R "$user" "$work/user" "$work/home"

    leader() { python3 "$py" field leader; }
    for m in tp-veth tp-zone; do
        timeout 30 "$mm" start --no-systemd "$m" >/dev/null || { echo "mm start $m failed" >&2; exit 1; }
    done
    for m in tp-rootless tp-rzone; do
        timeout 30 "${as_user[@]}" "$mm" start --no-systemd "$m" >/dev/null ||
            { echo "mm start $m (as $user) failed" >&2; exit 1; }
    done
    rzone_leader=$(timeout 10 "${as_user[@]}" "$mm" status tp-rzone --json | leader)
    veth_leader=$(timeout 10 "$mm" status tp-veth --json | leader)
    zone_leader=$(timeout 10 "$mm" status tp-zone --json | leader)
    rootless_leader=$(timeout 10 "${as_user[@]}" "$mm" status tp-rootless --json | leader)
    veth_addr=$(timeout 10 "$mm" exec tp-veth -- ip -4 addr show host0 | awk '$1 == "inet" {sub("/.*", "", $2); print $2}')
    zone_addr=$(timeout 10 "$mm" exec tp-zone -- ip -4 addr show host0 | awk '$1 == "inet" {sub("/.*", "", $2); print $2}')
    [ -n "$veth_addr" ] && [ -n "$zone_addr" ] || { echo "no address for the machines" >&2; exit 1; }

    # The bare veth's far end.
    timeout 900 ip netns exec "$peer_ns" iperf3 -s -p 5201 </dev/null >/dev/null 2>&1 &
    pids+=($!)
    bare_server=$!
    # slirp4netns by hand, as the user: a namespace from unshare -rn, iperf3 inside.
    sleep_bin=$(readlink -f "$(command -v sleep)")
    setpriv --reuid "$user" --regid users --init-groups -- unshare -rn sleep 900 </dev/null >/dev/null &
    holder=$!
    pids+=("$holder")
    for _ in $(seq 500); do
        [ "$(readlink "/proc/$holder/exe" 2>/dev/null)" = "$sleep_bin" ] && break
        sleep 0.01
    done
    setpriv --reuid "$user" --regid users --init-groups -- timeout 900 slirp4netns --configure \
        --mtu=65520 --disable-host-loopback --enable-sandbox --enable-seccomp \
        --api-socket "$work/home/slirp.sock" "$holder" tap0 </dev/null >/dev/null 2>"$work/slirp.err" &
    pids+=($!)
    python3 "$py" hostfwd "$work/home/slirp.sock" 15202 5201
    setpriv --reuid "$user" --regid users --init-groups -- nsenter -t "$holder" -U -n --preserve-credentials \
        timeout 900 iperf3 -s -p 5201 </dev/null >/dev/null 2>&1 &
    pids+=($!)

    python3 "$py" listening "$veth_leader" 5201
    python3 "$py" listening "$zone_leader" 5201
    python3 "$py" listening "$rootless_leader" 5201
    python3 "$py" listening "$rzone_leader" 5201
    python3 "$py" listening "$bare_server" 5201
    python3 "$py" listening "$holder" 5201

    cases=("mm veth, direct" "mm veth, forward" "mm zone" "bare veth"
        "mm rootless, forward" "mm rootless zone, fwd" "slirp4netns by hand")
    client() { # CASE: the client's command
        case $1 in
            "mm veth, direct") echo "iperf3 -c $veth_addr -p 5201" ;;
            "mm veth, forward") echo "iperf3 -c $uplink -p 5201" ;;
            "mm zone") echo "iperf3 -c $zone_addr -p 5201" ;;
            "bare veth") echo "iperf3 -c 198.19.0.2 -p 5201" ;;
            "mm rootless, forward") echo "setpriv --reuid $user --regid users --init-groups -- iperf3 -c 127.0.0.1 -p 15201" ;;
            "mm rootless zone, fwd") echo "setpriv --reuid $user --regid users --init-groups -- iperf3 -c 127.0.0.1 -p 15203" ;;
            "slirp4netns by hand") echo "setpriv --reuid $user --regid users --init-groups -- iperf3 -c 127.0.0.1 -p 15202" ;;
        esac
    }
    : >"$work/rates"
    for round in $(seq "$truns"); do
        for case in "${cases[@]}"; do
            # shellcheck disable=SC2046 # the client's words
            timeout $((secs + 30)) $(client "$case") -t "$secs" -J >"$work/iperf.json" </dev/null ||
                { echo "$case: iperf3 failed" >&2; cat "$work/iperf.json" >&2; exit 1; }
            echo "$case $(python3 "$py" gbits "$work/iperf.json")" >>"$work/rates"
        done
        echo "done: throughput round $round" >&2
    done

    echo "mm $(git rev-parse --short HEAD), $(date -u +%F), kernel $(uname -r)," \
        "$(systemd-nspawn --version | head -1), $(iperf3 --version | head -1 | cut -d' ' -f1-2)," \
        "$(slirp4netns --version | head -1); load average before $load_before," \
        "after $(cut -d' ' -f1-3 /proc/loadavg)"
    python3 "$py" start-report "${jsons[@]}"
    python3 "$py" tput-report "$work/rates"
    echo "MTUs: machines' veth $(ip -o link show "ve-tp-veth" | awk '{print $5}'), zone bridge $(ip -o link show vz-mmtp | awk '{print $5}'), bare veth $(ip -o link show bv-host | awk '{print $5}'), rootless 65520"
    exit 0
fi

cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/network.sh needs root" >&2; exit 1; }
need=()
for tool in hyperfine:hyperfine iperf3:iperf3 systemd-nspawn:systemd-container \
    slirp4netns:slirp4netns nft:nftables newuidmap:uidmap; do
    command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    apt-get install -y -q "${need[@]}" >/dev/null
fi
cargo build -q --release
[ -e images/busybox/index.json ] || ./scripts/build-busybox-image >/dev/null
mm=$PWD/target/release/mm

user=mmbench-net
made_user=
if ! id "$user" >/dev/null 2>&1; then
    useradd --no-create-home --shell /usr/sbin/nologin --gid users "$user"
    made_user=1
fi
tun_mode=$(stat -c %a /dev/net/tun)
ns=mmbench-$$
work=$(mktemp -d /var/tmp/mm-bench-net.XXXXXX)
# The machines' ids (and the rootless user) must be able to reach their roots under it.
chmod 755 "$work"
cleanup() {
    ip netns del "$ns" 2>/dev/null || true
    ip netns del "$ns-peer" 2>/dev/null || true
    [ "$tun_mode" = 666 ] || chmod "$tun_mode" /dev/net/tun
    rm -rf "$work"
    [ -z "$made_user" ] || userdel "$user"
}
trap cleanup EXIT
[ "$tun_mode" = 666 ] || chmod 0666 /dev/net/tun
ip netns add "$ns"
ip netns add "$ns-peer"

rootfs=$work/rootfs
"$mm" image extract "oci:$PWD/images/busybox:latest" "$rootfs" >/dev/null
mkdir -p "$rootfs/usr" # systemd-nspawn refuses a tree without /usr

PEER_NS=$ns-peer timeout 1200 nsenter --net="/run/netns/$ns" unshare --mount --propagation private \
    "$PWD/bench/network.sh" --inside "$work" "$user"

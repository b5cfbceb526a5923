#!/usr/bin/env bash
# Rootless networking helpers side by side, each attached to a namespace made by
# `unshare -rn` as an ordinary user:
#   slirp4netns-65520, slirp4netns-1500  --configure --mtu=N
#   slirp4netns-mm                       as mm runs it: MTU 65520, --enable-sandbox,
#                                        --enable-seccomp
#   pasta                                -f --config-net and its defaults
#   pasta-mm                             slirp4netns's addresses (-a/-n/-g/--dns-forward)
#                                        and only the forwards asked for (-t/-u/-T/-U)
# and measured:
#   (a) setup: from spawning the helper until the namespace has an address and a default
#       route (polled in /proc/PID/net/route), with --disable-host-loopback for slirp4netns;
#       median of RUNS (default 10);
#   (b) TCP namespace -> host: iperf3 client inside, server on the host's 127.0.0.1,
#       reached through the gateway address the helper maps to the host's loopback
#       (slirp4netns then without --disable-host-loopback);
#   (c) TCP host -> namespace through a port forward: host 127.0.0.1:PORT -> iperf3 server
#       inside (slirp4netns: add_hostfwd on its API socket; pasta: -t).
# Throughput is the receiver's rate of an `iperf3 -t SECONDS_PER_RUN` (default 5), median
# of TRUNS (default 3). Beside them: pasta's spliced path (-T: the namespace's own
# 127.0.0.1:PORT to the host's) and the host's loopback. Prints a table (median, min-max)
# and the ratios pasta / slirp4netns.
#
# Needs root. The work is done as the user given in $1, or as `mmbench-net`, created (with
# the /etc/subuid range useradd gives) and removed at the end. If /dev/net/tun is not
# usable by others, it is made 0666 (Debian's default) for the run and put back afterwards.
#
# Nothing leaves the machine: everything runs in a network namespace of its own whose
# "uplink" is a bridge without ports (pasta copies the host's uplink address and route;
# here there is nothing behind them), and in a PID namespace of its own, so that every
# process the run made dies with it. Every run is bounded in time.
set -euo pipefail
[ -z "${TRACE:-}" ] || set -x

if [ "${1:-}" = --inside ]; then
    shift
    user=$1 work=$2
    runs=${RUNS:-10} truns=${TRUNS:-3} secs=${SECONDS_PER_RUN:-5}
    gid=$(id -g "$user")
    # Arrays, not functions: `"${as_user[@]}" CMD &` makes $! the command's own pid.
    as_user=(setpriv --reuid "$user" --regid "$gid" --init-groups --)
    in_ns() { "${as_user[@]}" nsenter -t "$1" -U -n --preserve-credentials "${@:2}"; }

    # The stand-in host: loopback, and a portless bridge as the uplink with a default route.
    ip link set lo up
    ip link add mmbench0 type bridge
    ip addr add 192.0.2.2/24 dev mmbench0
    ip link set mmbench0 up
    ip route add default via 192.0.2.1 dev mmbench0

    sleep_bin=$(readlink -f "$(command -v sleep)")
    py=$work/bench.py
    cat >"$py" <<'PY'
import json, os, socket, subprocess, sys, time

def has_default_route(pid):
    try:
        with open(f"/proc/{pid}/net/route") as f:
            return any(line.split()[1] == "00000000" for line in list(f)[1:])
    except OSError:
        return False

def wait_ready(pid, deadline_s=5.0):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if has_default_route(pid):
            return True
        time.sleep(0.0005)
    return False

cmd = sys.argv[1]
if cmd == "setup":
    # setup HOLDER_PID ARGV...: spawn ARGV, time until HOLDER's namespace has a default
    # route, then stop ARGV. Prints milliseconds.
    holder, argv = int(sys.argv[2]), sys.argv[3:]
    t0 = time.monotonic()
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    ok = wait_ready(holder)
    elapsed = (time.monotonic() - t0) * 1000
    child.terminate()
    child.wait(timeout=5)
    if not ok:
        sys.exit(f"{argv[0]}: no default route within 5 s")
    print(f"{elapsed:.2f}")
elif cmd == "ready":
    if not wait_ready(int(sys.argv[2])):
        sys.exit("no default route within 5 s")
elif cmd == "hostfwd":
    # hostfwd SOCKET HOST_PORT GUEST_PORT: slirp4netns's add_hostfwd, on 127.0.0.1.
    path, host_port, guest_port = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    request = {"execute": "add_hostfwd", "arguments": {"proto": "tcp",
               "host_addr": "127.0.0.1", "host_port": host_port, "guest_port": guest_port}}
    end = time.monotonic() + 5
    while not os.path.exists(path):
        if time.monotonic() > end:
            sys.exit(f"{path} did not appear")
        time.sleep(0.001)
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(path)
    s.sendall(json.dumps(request).encode())
    s.shutdown(socket.SHUT_WR)
    answer = json.loads(s.recv(4096))
    if "return" not in answer:
        sys.exit(f"add_hostfwd: {answer}")
elif cmd == "gbits":
    # gbits FILE: the receiver's rate from iperf3 -J output.
    with open(sys.argv[2]) as f:
        print(f'{json.load(f)["end"]["sum_received"]["bits_per_second"] / 1e9:.2f}')
elif cmd == "median":
    values = sorted(float(v) for v in sys.argv[2:])
    n = len(values)
    m = values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2
    print(f"{m:.2f} {values[0]:.2f} {values[-1]:.2f}")
PY
    chmod 644 "$py"

    # helper_argv NAME HOLDER [forward PORT]: the helper's command line for one case.
    # For throughput slirp4netns must allow the host's loopback (through 10.0.2.2).
    helper_argv() {
        local name=$1 holder=$2 purpose=$3 fwd=${4:-}
        case $name in
            slirp4netns-65520 | slirp4netns-1500 | slirp4netns-mm)
                local mtu=${name#slirp4netns-}
                argv=(slirp4netns --configure)
                # As mm runs it: MTU 65520, in its own mount namespace, under seccomp.
                if [ "$mtu" = mm ]; then
                    argv+=(--mtu=65520 --enable-sandbox --enable-seccomp)
                else
                    argv+=(--mtu="$mtu")
                fi
                [ "$purpose" = setup ] && argv+=(--disable-host-loopback)
                [ -n "$fwd" ] && argv+=(--api-socket "$work/slirp.sock")
                argv+=("$holder" tap0)
                ;;
            pasta)
                argv=(pasta -f -q --config-net)
                [ -n "$fwd" ] && argv+=(-t "127.0.0.1/$fwd:5202")
                argv+=("$holder")
                ;;
            pasta-mm)
                # As mm runs it: slirp4netns's addresses, only the forwards asked for.
                argv=(pasta -f -q --config-net -I tap0 -a 10.0.2.100 -n 24 -g 10.0.2.2
                    --dns-forward 10.0.2.3 -u none -T none -U none)
                if [ -n "$fwd" ]; then argv+=(-t "127.0.0.1/$fwd:5202"); else argv+=(-t none); fi
                argv+=("$holder")
                ;;
        esac
    }
    gateway() { case $1 in pasta) echo 192.0.2.1 ;; *) echo 10.0.2.2 ;; esac; }

    # splice_out: pasta's other path to the host, the namespace's own 127.0.0.1:5201
    # forwarded to the host's by -T (spliced, no tap). Prints Gbit/s.
    splice_out() {
        new_holder
        "${as_user[@]}" timeout 60 pasta -f -q --config-net -t none -u none -T 5201 -U none \
            "$holder" >/dev/null 2>"$work/helper.err" &
        local helper=$!
        python3 "$py" ready "$holder"
        "${as_user[@]}" timeout 30 iperf3 -s -1 -B 127.0.0.1 -p 5201 </dev/null >/dev/null &
        local server=$!
        sleep 0.3
        in_ns "$holder" timeout 30 iperf3 -c 127.0.0.1 -p 5201 -t "$secs" -J >"$work/iperf.json"
        wait "$server" || true
        kill "$helper" "$holder" 2>/dev/null || true
        wait "$helper" "$holder" 2>/dev/null || true
        python3 "$py" gbits "$work/iperf.json"
    }

    new_holder() {
        "${as_user[@]}" unshare -rn sleep 120 </dev/null >/dev/null &
        holder=$!
        # Its namespaces exist once unshare has become sleep.
        for _ in $(seq 500); do
            [ "$(readlink "/proc/$holder/exe" 2>/dev/null)" = "$sleep_bin" ] && return
            sleep 0.01
        done
        echo "the namespace holder did not start" >&2
        exit 1
    }

    # throughput NAME DIRECTION: one iperf3 run, prints Gbit/s.
    throughput() {
        local name=$1 dir=$2 port=15202 out=$work/iperf.json
        new_holder
        if [ "$dir" = out ]; then helper_argv "$name" "$holder" run; else helper_argv "$name" "$holder" run "$port"; fi
        rm -f "$work/slirp.sock"
        "${as_user[@]}" timeout 60 "${argv[@]}" >/dev/null 2>"$work/helper.err" &
        local helper=$!
        python3 "$py" ready "$holder"
        if [ "$dir" = out ]; then
            "${as_user[@]}" timeout 30 iperf3 -s -1 -B 127.0.0.1 -p 5201 </dev/null >/dev/null &
            local server=$!
            sleep 0.3
            in_ns "$holder" timeout 30 iperf3 -c "$(gateway "$name")" -p 5201 -t "$secs" -J >"$out"
        else
            [[ $name = slirp4netns* ]] && python3 "$py" hostfwd "$work/slirp.sock" "$port" 5202
            in_ns "$holder" timeout 30 iperf3 -s -1 -p 5202 </dev/null >/dev/null &
            local server=$!
            sleep 0.3
            "${as_user[@]}" timeout 30 iperf3 -c 127.0.0.1 -p "$port" -t "$secs" -J >"$out"
        fi
        wait "$server" || true
        kill "$helper" "$holder" 2>/dev/null || true
        wait "$helper" "$holder" 2>/dev/null || true
        python3 "$py" gbits "$out"
    }

    names=(slirp4netns-65520 slirp4netns-1500 slirp4netns-mm pasta pasta-mm)
    declare -A setup ns_out fwd_in
    for name in "${names[@]}"; do
        times=()
        for _ in $(seq "$runs"); do
            new_holder
            helper_argv "$name" "$holder" setup
            times+=("$(python3 "$py" setup "$holder" "${as_user[@]}" "${argv[@]}")")
            kill "$holder"
            wait "$holder" 2>/dev/null || true
        done
        setup[$name]=$(python3 "$py" median "${times[@]}")
        rates=()
        for _ in $(seq "$truns"); do rates+=("$(throughput "$name" out)"); done
        ns_out[$name]=$(python3 "$py" median "${rates[@]}")
        rates=()
        for _ in $(seq "$truns"); do rates+=("$(throughput "$name" in)"); done
        fwd_in[$name]=$(python3 "$py" median "${rates[@]}")
        echo "done: $name" >&2
    done
    rates=()
    for _ in $(seq "$truns"); do rates+=("$(splice_out)"); done
    splice=$(python3 "$py" median "${rates[@]}")
    # The host's own loopback, as the ceiling.
    "${as_user[@]}" timeout 30 iperf3 -s -1 -B 127.0.0.1 -p 5201 </dev/null >/dev/null &
    sleep 0.3
    "${as_user[@]}" timeout 30 iperf3 -c 127.0.0.1 -p 5201 -t "$secs" -J >"$work/iperf.json"
    wait
    loopback=$(python3 "$py" gbits "$work/iperf.json")

    printf '%-20s %-24s %-22s %-22s\n' "" "setup ms (min-max)" "ns->host Gbit/s" "host->ns fwd Gbit/s"
    for name in "${names[@]}"; do
        read -r sm smin smax <<<"${setup[$name]}"
        read -r om omin omax <<<"${ns_out[$name]}"
        read -r im imin imax <<<"${fwd_in[$name]}"
        printf '%-20s %-24s %-22s %-22s\n' "$name" "$sm ($smin-$smax)" "$om ($omin-$omax)" "$im ($imin-$imax)"
    done
    echo "pasta -T 5201, the namespace's 127.0.0.1 spliced to the host's: ${splice%% *} Gbit/s"
    echo "host loopback (iperf3 127.0.0.1 -> 127.0.0.1): $loopback Gbit/s"
    for pasta in pasta pasta-mm; do
        for base in slirp4netns-65520 slirp4netns-1500 slirp4netns-mm; do
            python3 - "$pasta" "$base" "${setup[$pasta]%% *}" "${setup[$base]%% *}" \
                "${ns_out[$pasta]%% *}" "${ns_out[$base]%% *}" "${fwd_in[$pasta]%% *}" \
                "${fwd_in[$base]%% *}" <<'PY'
import sys
p, b, ps, ss, po, so, pi, si = *sys.argv[1:3], *map(float, sys.argv[3:])
print(f"{p} / {b}: setup {ps / ss:.2f}, ns->host {po / so:.2f}, host->ns {pi / si:.2f}")
PY
        done
    done
    exit 0
fi

cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/rootless-net.sh needs root" >&2; exit 1; }
for tool in slirp4netns:slirp4netns pasta:passt iperf3:iperf3 python3:python3; do
    command -v "${tool%%:*}" >/dev/null || { echo "install Debian's ${tool#*:}" >&2; exit 1; }
done

user=${1:-mmbench-net}
made_user=
if ! id "$user" >/dev/null 2>&1; then
    # useradd gives a new ordinary user its /etc/subuid and /etc/subgid range.
    useradd --no-create-home --shell /usr/sbin/nologin --gid users "$user"
    made_user=1
fi
tun_mode=$(stat -c %a /dev/net/tun)
work=$(mktemp -d /tmp/mm-bench-net.XXXXXX)
chmod 755 "$work"
chown "$user" "$work"
cleanup() {
    [ "$tun_mode" = 666 ] || chmod "$tun_mode" /dev/net/tun
    rm -rf "$work"
    [ -z "$made_user" ] || userdel "$user"
}
trap cleanup EXIT
[ "$tun_mode" = 666 ] || chmod 0666 /dev/net/tun

timeout 900 unshare --net --pid --fork --kill-child --mount-proc \
    "$PWD/bench/rootless-net.sh" --inside "$user" "$work"

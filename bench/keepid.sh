#!/usr/bin/env bash
# The first start of a rootless keep_id machine against one without keep_id, each on a
# fresh store: `mm start` (import, unpack, start) plus a first `mm exec -- true`,
# interleaved, ROUNDS times; prints each time and the medians.
#   bench/keepid.sh MM IMAGE.tar [ROUNDS]      (run it as an ordinary user with subordinate ids)
# MM is a release build; IMAGE.tar a Debian rootfs tar (tests/fixtures/debian/make-devtar.sh).
set -euo pipefail
mm=$(realpath "${1:?usage: keepid.sh MM IMAGE.tar [ROUNDS]}")
tar=$(realpath "${2:?usage: keepid.sh MM IMAGE.tar [ROUNDS]}")
rounds=${3:-5}
work=$(mktemp -d "${TMPDIR:-/tmp}/mm-bench-keepid.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/machines"
for kind in plain keepid; do
    users=""
    [ "$kind" = keepid ] && users=$'[users]\nkeep_id = true'
    cat > "$work/machines/$kind.toml" <<TOML
[image]
source = "tar:$tar"
[exec]
command = ["sleep", "infinity"]
[storage]
persistent = false
[network]
mode = "host"
$users
TOML
done
now() { date +%s%N; }
declare -A times
for round in $(seq "$rounds"); do
    for kind in plain keepid; do
        root="$work/state-$kind-$round"
        start=$(now)
        MM_ROOT=$root MM_PATH=$work/machines "$mm" start "$kind" >/dev/null 2>&1
        MM_ROOT=$root MM_PATH=$work/machines "$mm" exec "$kind" -- true
        took=$(( ($(now) - start) / 1000000 ))
        MM_ROOT=$root MM_PATH=$work/machines "$mm" stop "$kind" --timeout 1 >/dev/null
        MM_ROOT=$root MM_PATH=$work/machines "$mm" rm "$kind" >/dev/null
        # The layers belong to subordinate ids: removed through mm's worker.
        MM_ROOT=$root "$mm" image rm "tar:$tar" >/dev/null
        MM_ROOT=$root "$mm" image gc >/dev/null
        times[$kind]+="$took "
        echo "round $round $kind: $took ms"
    done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
plain=$(echo "${times[plain]}" | median)
keepid=$(echo "${times[keepid]}" | median)
echo "median first start: without keep_id $plain ms, with keep_id $keepid ms ($(awk "BEGIN {printf \"%.2f\", $keepid / $plain}")x)"

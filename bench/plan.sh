#!/usr/bin/env bash
# What planning costs: `mm plan` and `mm validate` (parse, validate, probe the host, compile)
# beside the bare start-up of the peers mm will be compared with. No peer has a plan step;
# the fair reading is "mm's whole plan costs less than nspawn's start before it does
# anything". Needs hyperfine; builds mm in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v hyperfine >/dev/null || { echo "install hyperfine (apt-get install hyperfine)" >&2; exit 1; }
cargo build -q --release
mm=./target/release/mm
peers=()
command -v systemd-nspawn >/dev/null && peers+=("systemd-nspawn --help")
command -v machinectl >/dev/null && peers+=("machinectl --help")
hyperfine -N --warmup 5 --runs "${RUNS:-100}" \
    "$mm plan web" \
    "$mm validate web" \
    "$mm host --json" \
    "env DBUS_SYSTEM_BUS_ADDRESS=unix:path=/nonexistent $mm plan web" \
    "${peers[@]}" \
    --export-markdown target/bench-plan.md
echo "table: target/bench-plan.md"
